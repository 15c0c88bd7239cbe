"""A stand-in detector for tests: a tiny ONNX graph with NanoDet's input and outputs whose values are
chosen by the test (each output a constant), so decoding, boxes, NMS and the cap can be checked exactly
without the real model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from app.core.detectors import MODEL_FILE, RECORD_FILE, DetectorSpec, detector_dir, get_detector, make_record

SPEC = get_detector("nanodet-m")


def bins_for(distance_in_strides: float, bins: int) -> np.ndarray:
    """Logits over ``bins`` whose softmax expectation is ``distance_in_strides`` (0 .. bins - 1)."""
    lo = int(np.floor(distance_in_strides))
    hi = min(lo + 1, bins - 1)
    frac = distance_in_strides - lo
    logits = np.full(bins, -1e4, np.float32)
    logits[lo] = np.log(max(1 - frac, 1e-12))
    if hi != lo:
        logits[hi] = np.log(max(frac, 1e-12))
    return logits


def fake_outputs(objects, spec: DetectorSpec = SPEC) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """stride -> (scores (cells, classes), bins (cells, 4 * bins)) with each object ``(stride, row, col,
    class_id, score, (l, t, r, b) in input pixels)`` placed at its cell; everything else scores 0."""
    out = {}
    for stride in spec.strides:
        side = spec.input_size // stride
        cls = np.zeros((side * side, len(spec.labels)), np.float32)
        reg = np.tile(bins_for(1.0, spec.bins), (side * side, 4))
        out[stride] = (cls, reg)
    for stride, row, col, class_id, score, sides in objects:
        cls, reg = out[stride]
        cell = row * (spec.input_size // stride) + col
        cls[cell, class_id] = score
        reg[cell] = np.concatenate([bins_for(d / stride, spec.bins) for d in sides])
    return out


def write_fake_model(path: Path, objects, spec: DetectorSpec = SPEC) -> Path:
    """An ONNX model taking (1, 3, S, S) whose outputs are ``fake_outputs(objects)`` (the input is read
    and multiplied by zero, so the graph is a real function of it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    size = spec.input_size
    nodes, outputs, inits = [], [], []
    nodes.append(helper.make_node("ReduceSum", ["input_1"], ["total"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["total", "zero"], ["nothing"]))
    inits.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    for stride, (cls, reg) in fake_outputs(objects, spec).items():
        for kind, arr in (("cls", cls), ("reg", reg)):
            name = f"{kind}{stride}"
            inits.append(numpy_helper.from_array(arr[None], f"{name}_value"))
            nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr[None].shape)))
    graph = helper.make_graph(nodes, "fake-detector",
                              [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, 3, size, size])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def install_fake(cache_dir: Path, objects, spec: DetectorSpec = SPEC) -> Path:
    """A fake model installed as the installer would leave it (model + record with its checksum)."""
    folder = detector_dir(cache_dir, spec)
    model = write_fake_model(folder / MODEL_FILE, objects, spec)
    (folder / RECORD_FILE).write_text(json.dumps(make_record(spec, model, check={"fake": True})))
    return model


def cup_at_check_box(spec: DetectorSpec = SPEC):
    """One object: a cup whose box, in the check photo (200 x 133, stretched to the input), is the
    entry's ``check_box``."""
    w, h = 200, 133
    sx, sy = spec.input_size / w, spec.input_size / h
    x1, y1, x2, y2 = spec.check_box
    bx1, by1, bx2, by2 = x1 * sx, y1 * sy, x2 * sx, y2 * sy
    stride = 32
    col, row = int((bx1 + bx2) / 2 // stride), int((by1 + by2) / 2 // stride)
    cx, cy = (col + 0.5) * stride, (row + 0.5) * stride
    return [(stride, row, col, spec.labels.index("cup"), 0.9, (cx - bx1, cy - by1, bx2 - cx, by2 - cy))]
