"""Operation, memory-access and energy model for Dense, CSR and WS layers.

Energy per operation, from the seed tables (Horowitz, ISSCC 2014, as quoted in
seed 004), picoules:

===========================  ======  ======
arithmetic (``bits``)        MULT    ADD
===========================  ======  ======
8-bit integer  (``8``)       0.2     0.03
16-bit float   (``16``)      1.1     0.4
32-bit float   (``32``)      3.7     0.9
32-bit integer (not a flag)  3.1     0.1
===========================  ======  ======

Memory: a 32-bit SRAM (8 KiB cache) access costs 5 pJ and a 32-bit DRAM access
640 pJ. (The seed's first table labels the 640 pJ row "32 bit SRAM Memory"; in
the source it is DRAM, and the seed's second table gives DRAM 1.3-2.6 nJ per
64-bit access, i.e. the same order. We use 640 pJ per 32 bits for DRAM.)

Counting, for one inference (batch 1) of a layer with R outputs, C inputs, P
positions (output pixels of a conv; 1 for Linear), nnz non-zeros, G groups:

- Dense: R*C*P multiplications and R*C*P additions (the accumulator starts at
  the bias, each product is one add; this gives the seed's 2 x 15.47 G = 30.94 G
  operations for VGG-16).
- CSR: nnz*P multiplications, nnz*P additions.
- WS (rewriting trick ``z_i = b_i + sum_k w_k * sum_{j in J_ik} a_j``): a group of n
  activations takes n - 1 additions, its product one multiplication and one
  addition into the accumulator: G*P multiplications, nnz*P additions.

Memory accesses (the assumptions; stated so they can be argued with):

- DRAM: the layer's stored weights (the storage accounting of
  ``nncodec.sparse.layouts``: values, indices, pointers, table) are read once
  per inference; activations stay on chip. Cost ``bits * 640 / 32`` pJ.
- SRAM: every element the inner loop touches is read from SRAM once per use, at
  its own width, ``bits * 5 / 32`` pJ (narrow fields packed into 32-bit words):
  Dense, per position, R*C weights and R*C activations; CSR, nnz weights, nnz
  column indices, nnz activations and R + 1 row pointers; WS, nnz column indices,
  nnz activations, G group values, G group lengths and R + 1 row pointers.
  Weights and activations are read at the arithmetic width (the table lookup
  is assumed done when the layer is loaded); indices and pointers at their
  stored widths. Each output is written once (R*P, same for every layout).
- Registers and control flow are not counted.

``arith`` (arithmetic only) is what the seed's table reports for dense VGG-16
(15.47 G x (3.7 + 0.9) pJ = 71 mJ).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional

import numpy as np

from .layouts import Storage, field_bits, storage_formulas

__all__ = ["ARITH_PJ", "INT32_PJ", "SRAM_PJ_32", "DRAM_PJ_32", "LayerCounts", "layer_report",
           "model_report", "LAYOUTS"]

LAYOUTS = ("dense", "csr", "ws")
#: bits -> (name, MULT pJ, ADD pJ), seed 004
ARITH_PJ = {8: ("8-bit integer", 0.2, 0.03), 16: ("16-bit float", 1.1, 0.4),
            32: ("32-bit float", 3.7, 0.9)}
INT32_PJ = ("32-bit integer", 3.1, 0.1)
SRAM_PJ_32 = 5.0
DRAM_PJ_32 = 640.0


@dataclass(frozen=True)
class LayerCounts:
    """The counts the formulas need; from a layout (``from_layout``) or from expectations."""

    name: str
    rows: int
    cols: int
    nnz: int
    groups: int
    max_group: int
    distinct_all: int
    distinct_nonzero: int
    positions: int = 1

    @classmethod
    def from_layout(cls, name: str, layout, positions: int = 1) -> "LayerCounts":
        return cls(name=name, positions=int(positions), **layout.stats())

    def storage(self, table_bits: int = 32) -> Dict[str, Storage]:
        return storage_formulas(self.rows, self.cols, self.nnz, self.groups, self.max_group,
                                self.distinct_all, self.distinct_nonzero, table_bits)


def operations(c: LayerCounts) -> Dict[str, Dict[str, int]]:
    P = c.positions
    return {"dense": {"mult": c.rows * c.cols * P, "add": c.rows * c.cols * P},
            "csr": {"mult": c.nnz * P, "add": c.nnz * P},
            "ws": {"mult": c.groups * P, "add": c.nnz * P}}


def sram_traffic(c: LayerCounts, bits: int, storage: Dict[str, Storage]) -> Dict[str, Dict[str, int]]:
    """SRAM reads (count and bits) and output writes per layout, for one inference."""
    P, R = c.positions, c.rows
    b_c = field_bits(c.cols)
    b_p = field_bits(c.nnz + 1)
    b_n = storage["ws"].widths["group_len"]
    out = {
        "dense": {"reads": 2 * R * c.cols * P, "read_bits": 2 * R * c.cols * P * bits},
        "csr": {"reads": (3 * c.nnz + R + 1) * P,
                "read_bits": (c.nnz * (2 * bits + b_c) + (R + 1) * b_p) * P},
        "ws": {"reads": (2 * c.nnz + 2 * c.groups + R + 1) * P,
               "read_bits": (c.nnz * (bits + b_c) + c.groups * (bits + b_n) + (R + 1) * b_p) * P},
    }
    for v in out.values():
        v["writes"] = R * P
        v["write_bits"] = R * P * bits
    return out


def layer_report(c: LayerCounts, bits: int = 32, table_bits: int = 32) -> dict:
    """Storage, operations, memory traffic and energy (pJ) of one layer in each layout."""
    if bits not in ARITH_PJ:
        raise ValueError(f"bits must be one of {sorted(ARITH_PJ)}")
    _, e_mul, e_add = ARITH_PJ[bits]
    st = c.storage(table_bits)
    ops = operations(c)
    sram = sram_traffic(c, bits, st)
    rep = {"name": c.name, "counts": asdict(c)}
    for lay in LAYOUTS:
        arith = ops[lay]["mult"] * e_mul + ops[lay]["add"] * e_add
        sram_pj = (sram[lay]["read_bits"] + sram[lay]["write_bits"]) * SRAM_PJ_32 / 32.0
        dram_pj = st[lay].total * DRAM_PJ_32 / 32.0
        rep[lay] = {"storage": st[lay].to_json(), "ops": dict(ops[lay], total=sum(ops[lay].values())),
                    "sram": sram[lay], "dram_bits": st[lay].total,
                    "energy_pj": {"arith": arith, "sram": sram_pj, "dram": dram_pj,
                                  "total": arith + sram_pj + dram_pj}}
    return rep


def _add(into: dict, d: dict) -> None:
    for k, v in d.items():
        if isinstance(v, dict):
            _add(into.setdefault(k, {}), v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            into[k] = into.get(k, 0) + v


def model_report(layers: Iterable[LayerCounts], bits: int = 32, table_bits: int = 32,
                 float_bits: Optional[int] = 32) -> dict:
    """Per-layer reports and their totals; ``dense_float_bytes`` is the unquantized size."""
    reps: List[dict] = [layer_report(c, bits, table_bits) for c in layers]
    total: dict = {}
    for r in reps:
        for lay in LAYOUTS:
            part = {k: v for k, v in r[lay].items() if k in ("ops", "sram", "energy_pj")}
            part["storage_bits"] = r[lay]["storage"]["bits"]
            _add(total.setdefault(lay, {}), part)
    weights = sum(r["counts"]["rows"] * r["counts"]["cols"] for r in reps)
    nnz = sum(r["counts"]["nnz"] for r in reps)
    return {"bits": bits, "arith": ARITH_PJ[bits][0], "table_bits": table_bits,
            "energy_pj_per_op": {"mult": ARITH_PJ[bits][1], "add": ARITH_PJ[bits][2],
                                 "sram_32bit": SRAM_PJ_32, "dram_32bit": DRAM_PJ_32},
            "weights": weights, "nnz": nnz,
            "dense_float_bytes": weights * (float_bits or 32) / 8.0,
            "layers": reps, "total": total}


def expected_groups(n: int, probs: np.ndarray) -> float:
    """Expected number of distinct values among ``n`` i.i.d. draws from ``probs``."""
    p = np.asarray(probs, dtype=np.float64)
    return float(np.sum(1.0 - np.power(1.0 - p, n)))
