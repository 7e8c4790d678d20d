"""Weights by name: torchvision's weight enums and its cache, timm's pretrained tags and the Hugging Face cache,
files (torch and safetensors), the offline error, the bounded download, and the identity a run records.

The caches are laid out exactly as torchvision (``$TORCH_HOME/hub/checkpoints/<url basename>``) and
huggingface_hub (``$HF_HOME/hub/models--<org>--<name>/{refs/main,snapshots/<rev>/<file>}``) lay them out, and
each is cross-checked against the library's own loader: ``torchvision.models.get_model(name, weights=...)``
and ``timm.create_model(name, pretrained=True)`` read the very file we placed.  No network is used."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torchvision

from pruning import weights as W
from pruning.loop import make_model

TV_MODEL = "mobilenet_v3_small"  # the smallest torchvision model with ImageNet weights (2.5 M parameters)
TIMM_MODEL = "timm/resnet18"  # DEFAULT tag: resnet18.a1_in1k


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("IMAGENET52P_OFFLINE", "1")
    return home


def _place_torchvision(home: Path, model: str = TV_MODEL, seed: int = 3) -> tuple[Path, torch.nn.Module]:
    """A state_dict of ``model`` (random, seeded: not torchvision's real weights, but its file name and place)."""
    entry = torchvision.models.get_model_weights(model).IMAGENET1K_V1
    torch.manual_seed(seed)
    net = torchvision.models.get_model(model, weights=None, num_classes=1000)
    path = home / "hub" / "checkpoints" / os.path.basename(entry.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path, net


def test_a_torchvision_weight_name_reads_torchvisions_own_cache_file(torch_home):
    path, placed = _place_torchvision(torch_home)
    assert path == W.torchvision_cache_file(torchvision.models.get_model_weights(TV_MODEL).IMAGENET1K_V1)
    ours = make_model(TV_MODEL, 1000, weights="IMAGENET1K_V1", seed=0)
    assert _same(ours, placed)
    # torchvision's own builder, with the same TORCH_HOME, reads the same file: the layout is its own
    theirs = torchvision.models.get_model(TV_MODEL, weights="IMAGENET1K_V1")
    assert _same(ours, theirs)
    # synonyms resolve to one canonical name; the identity records it and the file's sha256
    for spelling in ("IMAGENET1K_V1", "DEFAULT", "MobileNet_V3_Small_Weights.IMAGENET1K_V1"):
        src = W.resolve_weights(TV_MODEL, spelling)
        assert src.name == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
        assert W.canonical_name(TV_MODEL, spelling) == src.name
        assert src.identity() == {"kind": "torchvision", "name": src.name, "file": path.name,
                                  "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert src.label() == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"


def test_resnet50_default_is_the_entry_torchvision_defaults_to():
    assert W.canonical_name("resnet50", "DEFAULT") == "ResNet50_Weights.IMAGENET1K_V2"
    assert W.canonical_name("resnet50", "IMAGENET1K_V1") == "ResNet50_Weights.IMAGENET1K_V1"
    assert W.canonical_name("resnet50", "resnet50.pth") == "resnet50.pth"  # a file, left as written
    assert W.is_weight_name("vgg16", "IMAGENET1K_FEATURES") and not W.is_weight_name("vgg16", "IMAGENET1K_V9")
    # DEFAULT for a model without named weights: no name, so a grid expands (the file is reported missing
    # by validation), and the library says what DEFAULT cannot mean
    assert not W.is_weight_name("tinyvgg", "DEFAULT") and W.canonical_name("tinyvgg", "DEFAULT") == "DEFAULT"
    with pytest.raises(ValueError, match="no torchvision weight enum"):
        W.resolve_weights("tinyvgg", "DEFAULT")


def test_default_for_a_model_without_weights_expands_and_is_refused_by_validation(tmp_path):
    from benchmark.config import parse_config
    from benchmark.grid import expand_grid
    from benchmark.resolve import CellEnv
    from benchmark.validate import grid_problems

    cfg = parse_config({"name": "d", "data": {"full": "full"}, "model": {"name": "tinyvgg", "weights": "DEFAULT"},
                        "grid": [{"criterion": ["l1"], "ratio": [0.5]}]}, "d.toml")
    cells = expand_grid(cfg)
    problems = grid_problems(cfg, cells, CellEnv(results_dir=str(tmp_path), data_root=str(tmp_path)))
    text = " ".join(p for found in problems.values() for p in found)
    assert f"weights file {tmp_path / 'DEFAULT'} not found" in text


def test_weights_of_another_family_or_a_conflicting_tag_are_refused(tmp_path):
    src = W.WeightsSource("timm", "timm/resnet18.a1_in1k", tmp_path / "x.safetensors", 1000)
    with pytest.raises(ValueError, match="are not weights of torchvision model 'resnet18'"):
        make_model("resnet18", 1000, weights=src)
    with pytest.raises(ValueError, match="conflict with the tag 'a1_in1k'"):
        W.resolve_weights("timm/resnet18.a1_in1k", "a2_in1k")
    with pytest.raises(ValueError, match="revision"):
        W.resolve_weights("timm/resnet18.a1_in1k@main", "DEFAULT")


def test_offline_without_the_file_names_the_exact_file_and_folder(torch_home):
    entry = torchvision.models.get_model_weights(TV_MODEL).IMAGENET1K_V1
    expected = torch_home / "hub" / "checkpoints" / os.path.basename(entry.url)
    start = time.monotonic()
    with pytest.raises(W.WeightsNotFound) as exc:
        make_model(TV_MODEL, 1000, weights="DEFAULT")
    assert time.monotonic() - start < 20
    text = str(exc.value)
    assert str(expected) in text and str(expected.parent) in text and entry.url in text
    assert "IMAGENET52P_OFFLINE" in text and "curl" in text
    assert not expected.exists() and not expected.parent.exists() or not any(expected.parent.iterdir())


def test_a_damaged_cache_file_and_a_wrong_class_count_are_clear(torch_home):
    path, _ = _place_torchvision(torch_home)
    with pytest.raises(ValueError, match="1000-class classifier.*num_classes=1000, not 52"):
        make_model(TV_MODEL, 52, weights="IMAGENET1K_V1")
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError) as exc:
        make_model(TV_MODEL, 1000, weights="IMAGENET1K_V1")
    assert str(path) in str(exc.value) and "delete it" in str(exc.value)


def test_an_unknown_name_is_a_missing_file_listing_the_names(tmp_path):
    with pytest.raises(FileNotFoundError) as exc:
        W.resolve_weights("vgg16", "IMAGENET1K_V7")
    text = str(exc.value)
    assert "IMAGENET1K_V1" in text and "IMAGENET1K_FEATURES" in text and "no such file" in text
    with pytest.raises(ValueError, match="are not weights of own model 'tinyvgg'"):
        make_model("tinyvgg", 10, weights=W.WeightsSource("torchvision", "X", tmp_path))


class _Files(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def _serve(body: bytes):
    handler = type("H", (_Files,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/w-"


def test_the_download_is_checked_against_the_hash_in_the_name_and_never_half_written(tmp_path):
    body = os.urandom(3 << 20)
    digest = hashlib.sha256(body).hexdigest()
    server, base = _serve(body)
    try:
        dest = tmp_path / "hub" / "checkpoints" / f"w-{digest[:8]}.pth"
        W.download(base + digest[:8] + ".pth", dest, digest[:8])
        assert dest.read_bytes() == body
        bad = tmp_path / "bad" / "w-00000000.pth"
        with pytest.raises(ValueError, match="sha256"):
            W.download(base + "00000000.pth", bad, "00000000")
        assert not bad.exists() and list(bad.parent.iterdir()) == []
    finally:
        server.shutdown()


class _Slow(_Files):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        for i in range(0, len(self.body), 1 << 18):  # trickles, so the two downloads overlap
            self.wfile.write(self.body[i:i + (1 << 18)])
            time.sleep(0.05)


def test_two_processes_downloading_one_file_both_end_with_the_whole_file(tmp_path):
    import multiprocessing

    body = os.urandom(4 << 20)
    digest = hashlib.sha256(body).hexdigest()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("S", (_Slow,), {"body": body}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dest = tmp_path / f"w-{digest[:8]}.pth"
    url = f"http://127.0.0.1:{server.server_address[1]}/{dest.name}"
    try:
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=W.download, args=(url, dest, digest[:8])) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0]
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == digest
        assert [f.name for f in tmp_path.iterdir()] == [dest.name]  # no partial file left behind
    finally:
        server.shutdown()


def test_a_malformed_http_answer_is_an_oserror(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer():
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.sendall(b"garbage\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        with pytest.raises(OSError, match="bad HTTP answer"):
            W.download(f"http://127.0.0.1:{listener.getsockname()[1]}/x.pth", tmp_path / "x.pth", timeout=5.0)
        assert list(tmp_path.iterdir()) == []
    finally:
        listener.close()


def test_a_server_that_never_answers_times_out_instead_of_hanging(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never sends a byte
    try:
        start = time.monotonic()
        with pytest.raises(OSError):
            W.download(f"http://127.0.0.1:{listener.getsockname()[1]}/x.pth", tmp_path / "x.pth", timeout=1.0)
        assert time.monotonic() - start < 15
        assert list(tmp_path.iterdir()) == []
    finally:
        listener.close()


# timm: the Hugging Face cache, laid out as huggingface_hub does (a plain file instead of a blob symlink).
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _place_timm(hf_home: Path, full: str = "resnet18.a1_in1k", seed: int = 5) -> Path:
    import safetensors.torch
    import timm

    torch.manual_seed(seed)
    net = timm.create_model(full.split(".")[0], pretrained=False, num_classes=1000)
    repo = hf_home / "hub" / f"models--timm--{full}"
    snap = repo / "snapshots" / REVISION
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    path = snap / "model.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


TIMM_CHECK = """
import json, sys, timm, torch
from pruning.loop import make_model
from pruning.weights import resolve_weights
src = resolve_weights("timm/resnet18", "DEFAULT")
ours = make_model("timm/resnet18", 1000, weights="DEFAULT")
theirs = timm.create_model("resnet18.a1_in1k", pretrained=True)  # timm's own loader, offline, same cache
a, b = ours.state_dict(), theirs.state_dict()
same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
print(json.dumps({"same": same, "identity": src.identity(), "path": str(src.path)}))
"""


def test_a_timm_default_tag_is_read_from_the_hugging_face_cache_as_timm_reads_it(tmp_path):
    hf = tmp_path / "hf"
    path = _place_timm(hf)
    env = {**os.environ, "HF_HOME": str(hf), "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.getcwd()}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", TIMM_CHECK], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["same"] is True
    assert Path(out["path"]) == path
    assert out["identity"] == {"kind": "timm", "name": "timm/resnet18.a1_in1k", "file": "model.safetensors",
                               "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "revision": REVISION}


def test_timm_names_tags_files_and_the_offline_error(tmp_path, monkeypatch):
    import safetensors.torch
    import timm

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert W.canonical_name("timm:resnet18", "DEFAULT") == "timm/resnet18.a1_in1k"
    assert W.canonical_name("timm/resnet18", "a2_in1k") == "timm/resnet18.a2_in1k"
    assert W.canonical_name("timm/resnet18.a2_in1k", "DEFAULT") == "timm/resnet18.a2_in1k"
    with pytest.raises(W.WeightsNotFound) as exc:
        make_model("timm:resnet18", 1000, weights="a2_in1k")
    text = str(exc.value)
    folder = tmp_path / "empty_hf" / "hub" / "models--timm--resnet18.a2_in1k"
    assert str(folder) in text and "hf download timm/resnet18.a2_in1k model.safetensors" in text
    # a file: a state_dict of the model as built (here with 7 classes), torch or safetensors, loaded strictly
    torch.manual_seed(1)
    net = timm.create_model("resnet18", num_classes=7)
    st = tmp_path / "mine.safetensors"
    safetensors.torch.save_file(net.state_dict(), str(st))
    pt = tmp_path / "mine.pth"
    torch.save(net.state_dict(), pt)
    for f in (st, pt):
        assert _same(make_model("timm/resnet18", 7, weights=str(f), seed=9), net)
    with pytest.raises(ValueError, match=f"weights file {st} does not fit"):
        make_model("timm/resnet18", 9, weights=str(st))
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot be read as safetensors"):
        make_model("timm/resnet18", 7, weights=str(tmp_path / "junk.safetensors"))
    # random init is seeded, like the torchvision models
    assert _same(make_model("timm/resnet18", 7, seed=4), make_model("timm/resnet18", 7, seed=4))
    with pytest.raises(ValueError, match="timm has no model 'resnet_does_not_exist'"):
        make_model("timm/resnet_does_not_exist", 7)
