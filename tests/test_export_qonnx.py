"""QONNX/QCDQ export round trip: the graph carries exactly the integers the monitor analyses."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from independent import hooked_codes
from onnx import numpy_helper

from ib_brevitas.experiments.data import syn_dataset
from ib_brevitas.experiments.models import syn_mlp
from ib_brevitas.export import ExportReport, to_qcdq, to_qonnx, verify
from ib_brevitas.functional import entropy, mutual_information


@pytest.fixture(scope="module")
def syn():
    x, y = syn_dataset()
    return torch.from_numpy(x).float(), torch.from_numpy(y)


def seeded_syn(activation: str, bits: int, seed: int = 0):
    torch.manual_seed(seed)
    model = syn_mlp(activation, bits)
    with torch.no_grad():  # non-zero biases, as after training, so layers are not trivially saturated
        for i in range(1, 7):
            getattr(model, f"fc{i}").bias.uniform_(-0.5, 0.5)
    return model


def graph_activation_codes(path, x):
    """Independent of verify's mapping: run the graph with qonnx at batch N and decode every
    activation Quant node (one whose input is not a weight initializer), in graph order."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes

    wrapped = ModelWrapper(str(path)).transform(ChangeBatchSize(x.shape[0])).transform(InferShapes())
    inits = {i.name for i in wrapped.graph.initializer}
    ctx = execute_onnx(wrapped, {wrapped.graph.input[0].name: x.numpy()}, return_full_exec_context=True)
    out = []
    for node in wrapped.graph.node:
        if node.op_type in ("Quant", "BipolarQuant") and node.input[0] not in inits:
            scale = ctx[node.input[1]].astype(np.float64)
            zero = ctx[node.input[2]].astype(np.float64) if node.op_type == "Quant" else 0.0
            raw = ctx[node.output[0]].astype(np.float64) / scale + zero
            assert np.abs(raw - np.round(raw)).max() < 1e-3
            out.append(np.round(raw).reshape(x.shape[0], -1).astype(np.int64))
    return out


def assert_all_layers_equal(report: ExportReport, names):
    assert report.ok, str(report)
    assert [c.layer for c in report.layers] == list(names)
    for c in report.layers:
        assert c.tensor and c.mismatches == 0 and c.reason is None
        assert c.i_xt_graph == c.i_xt_model and c.i_ty_graph == c.i_ty_model
    assert report.outputs_ok


@pytest.mark.parametrize("activation,bits", [("tanh", 8), ("relu", 8), ("tanh", 4), ("relu", 4)])
def test_syn_qonnx_round_trip(tmp_path, syn, activation, bits):
    x, y = syn
    model = seeded_syn(activation, bits)
    path = to_qonnx(model, x[:1], tmp_path / "syn.onnx")
    report = verify(model, path, x, y)
    names = [f"T{i}" for i in range(1, 7)]
    assert_all_layers_equal(report, names)
    assert report.output_exact and report.max_abs_diff == 0.0  # quantized softmax output: bit-exact
    # Independent computation: hooks on the model, a plain qonnx run of the graph, MI counted here.
    model_codes = hooked_codes(model, x, names)
    graph_codes = graph_activation_codes(path, x)
    assert len(graph_codes) == 6
    for check, name, g in zip(report.layers, names, graph_codes):
        np.testing.assert_array_equal(g, model_codes[name])
        assert check.i_xt_graph == pytest.approx(entropy(g), abs=1e-12)
        assert check.i_ty_graph == pytest.approx(mutual_information(g, y.numpy()), abs=1e-12)


@pytest.mark.parametrize("activation,bits", [("tanh", 8), ("relu", 4)])
def test_syn_qcdq_round_trip(tmp_path, syn, activation, bits):
    x, y = syn
    model = seeded_syn(activation, bits, seed=2)
    path = to_qcdq(model, x[:1], tmp_path / "syn_qcdq.onnx")
    report = verify(model, path, x, y)
    assert report.format == "qcdq"
    assert_all_layers_equal(report, [f"T{i}" for i in range(1, 7)])
    ops = {c.op_type for c in report.layers}
    assert ops == ({"QuantizeLinear"} if bits == 8 else {"Clip"})  # below 8 bits the code is clipped


@pytest.mark.parametrize("name,n", [("tfc_2w2a", 128), ("cnv_1w1a", 6)])
def test_bnn_pynq_round_trip(tmp_path, name, n):
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    model, _ = model_with_cfg(name, pretrained=False)
    shape = (n, 1, 28, 28) if name.startswith("tfc") else (n, 3, 32, 32)
    x = torch.rand(shape)
    y = torch.randint(0, 10, (n,))
    path = to_qonnx(model, x[:1], tmp_path / f"{name}.onnx")
    report = verify(model, path, x, y, batch_size=64)
    names = [c.layer for c in report.layers]
    assert len(names) == (4 if name.startswith("tfc") else 9)
    assert_all_layers_equal(report, names)
    assert report.max_abs_diff <= report.tolerance
    if name == "cnv_1w1a":  # binarized layers come out as BipolarQuant, codes +-1
        assert {c.op_type for c in report.layers[1:]} == {"BipolarQuant"}


def test_runtime_tanh_last_bit_differences_are_caught_exactly(tmp_path, syn):
    """ONNX Runtime's tanh is not bit-identical to PyTorch's. Predict independently, from the two
    tanh implementations alone, which T2 codes must flip, and require verify to report exactly those."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x, y = syn
    model = seeded_syn("tanh", 8, seed=1).eval()
    with torch.no_grad():
        pre = model.fc2(model.T1(model.fc1(x)))
    graph = helper.make_graph(
        [helper.make_node("Tanh", ["a"], ["b"])], "tanh",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)],
    )
    session = ort.InferenceSession(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    scale = 2.0 ** -7  # TanhFixedQuant at 8 bits
    ort_codes = np.clip(np.round(session.run(None, {"a": pre.numpy()})[0] / scale), -128, 127)
    torch_codes = np.clip(np.round(torch.tanh(pre).numpy() / scale), -128, 127)
    predicted = int(np.count_nonzero(ort_codes != torch_codes))
    if predicted == 0:
        pytest.skip("this ONNX Runtime build's tanh rounds like PyTorch's on these inputs")

    report = verify(model, to_qcdq(model, x[:1], tmp_path / "t.onnx"), x, y)
    by_layer = {c.layer: c for c in report.layers}
    assert by_layer["T1"].ok
    assert by_layer["T2"].mismatches == predicted and by_layer["T2"].max_step == 1
    assert not report.ok and report.failed_layers[0] == "T2"
    assert any("Tanh" in n for n in report.notes)


def _quant_node_of(model: onnx.ModelProto, layer: str) -> onnx.NodeProto:
    from ib_brevitas.export.qonnx import node_scope

    return next(n for n in model.graph.node if n.op_type == "Quant" and node_scope(n).startswith(f"{layer}.act_quant."))


def test_altered_quantizer_is_caught_by_layer(tmp_path, syn):
    x, y = syn
    model = seeded_syn("relu", 8)
    path = to_qonnx(model, x[:1], tmp_path / "syn.onnx")
    graph = onnx.load(str(path))
    node = _quant_node_of(graph, "T3")
    scale = next(i for i in graph.graph.initializer if i.name == node.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 2, scale.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(graph, str(broken))

    report = verify(model, broken, x, y)
    assert not report.ok
    by_layer = {c.layer: c for c in report.layers}
    assert by_layer["T1"].ok and by_layer["T2"].ok  # upstream of the change: untouched
    assert by_layer["T3"].mismatches > 0 and not by_layer["T3"].ok
    assert report.failed_layers[0] == "T3"
    assert "T3" in str(report) and "differ" in by_layer["T3"].reason


def test_removed_quantizer_is_reported_unmapped(tmp_path, syn):
    x, y = syn
    model = seeded_syn("tanh", 4)
    path = to_qonnx(model, x[:1], tmp_path / "syn.onnx")
    graph = onnx.load(str(path))
    node = _quant_node_of(graph, "T2")
    # Replace the T2 quantizer by an Identity: the graph then carries floats there.
    identity = onnx.helper.make_node("Identity", [node.input[0]], [node.output[0]], name="not_quant")
    index = list(graph.graph.node).index(node)
    graph.graph.node.remove(node)
    graph.graph.node.insert(index, identity)
    broken = tmp_path / "no_t2.onnx"
    onnx.save(graph, str(broken))

    report = verify(model, broken, x, y)
    assert not report.ok
    assert report.unmapped == ["T2"]
    t2 = next(c for c in report.layers if c.layer == "T2")
    assert t2.tensor is None and "no Quant" in t2.reason and "'T2.act_quant'" in t2.reason
    assert "T2" in str(report)


def test_report_saves_and_loads(tmp_path, syn):
    x, y = syn
    model = seeded_syn("relu", 4)
    path = to_qonnx(model, x[:1], tmp_path / "syn.onnx")
    report = verify(model, path, x[:512], layers=["T2", "T5"])
    assert [c.layer for c in report.layers] == ["T2", "T5"]
    assert all(c.i_ty_model is None and c.i_ty_graph is None for c in report.layers)  # no labels
    report.save(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert {"ok", "max_abs_diff", "layers"} <= set(data)
    assert set(data["layers"][0]) >= {"layer", "tensor", "mismatches", "i_xt_model", "i_xt_graph",
                                      "i_ty_model", "i_ty_graph"}
    again = ExportReport.load(tmp_path / "r.json")
    assert again.layers == report.layers and again.ok == report.ok
    csv = report.save_csv(tmp_path / "r.csv").read_text().splitlines()
    assert len(csv) == 3 and csv[0].startswith("layer,tensor,mismatches")


def test_export_and_verify_leave_the_model_untouched(tmp_path, syn):
    x, y = syn
    model = seeded_syn("relu", 8)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = to_qonnx(model, x[:1], tmp_path / "m.onnx")
    verify(model, path, x[:256], y[:256])
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_inputs_are_clear_errors(tmp_path, syn):
    x, _ = syn
    model = seeded_syn("relu", 8)
    with pytest.raises(ValueError, match="does not exist"):
        verify(model, tmp_path / "missing.onnx", x)
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Linear(12, 2), (x[:1],), str(plain), dynamo=False)
    with pytest.raises(ValueError, match="no Quant"):
        verify(model, plain, x)


def test_export_cli_on_a_run_directory(tmp_path, syn):
    from ib_brevitas.cli import main

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    model = seeded_syn("relu", 4, seed=3)
    (run_dir / "config.json").write_text(json.dumps({"dataset": "syn", "activation": "relu", "bits": 4, "seed": 3}))
    torch.save({"model": model.state_dict(), "epoch": 7}, run_dir / "checkpoints" / "last.pt")
    assert main(["export", str(run_dir)]) == 0
    report = ExportReport.load(run_dir / "export" / "verify_qonnx.json")
    assert report.ok and report.n_samples == 4096 and len(report.layers) == 6
    # Same model, same codes: the layer MI equals the model's own measurement.
    expected = hooked_codes(model, syn[0], ["T4"])["T4"]
    assert report.layers[3].i_xt_graph == pytest.approx(entropy(expected), abs=1e-12)
    out = tmp_path / "other.onnx"
    assert main(["export", str(run_dir), "--format", "qcdq", "-o", str(out)]) == 0
    assert out.is_file() and (run_dir / "export" / "verify_qcdq.csv").is_file()
    assert main(["export", str(tmp_path / "nothing")]) == 2
