# The dependent quantizer's 4-state machine (formats/cabac-v1.md, section 1), shared by the
# coder (_cabac.pyx) and the trellis (_trellis.pyx).  States 0 and 1 use the quantizer of even
# multiples of the step, states 2 and 3 the one of odd multiples; the parity of |level| moves
# the state: (state, parity) -> (0, 0) 0, (0, 1) 2, (1, 0) 2, (1, 1) 0, (2, 0) 1, (2, 1) 3,
# (3, 0) 3, (3, 1) 1, two bits an entry in the constant below.

cdef inline int dq_next(int state, int parity) noexcept nogil:
    return (32040 >> (((state << 1) | parity) << 1)) & 3
