"""Names the hub does not have: a clear error within seconds, not a traceback.

The hub here is a local HTTP server that answers every request as huggingface.co answers a repository it does not
have (404, RepoNotFound); HF_ENDPOINT points the real huggingface_hub, transformers and datasets at it, as a user
points them at a mirror.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NoSuchRepository(BaseHTTPRequestHandler):
    """404 RepoNotFound; under /gated/ 401 GatedRepo, as for a gated repository without access."""

    def answer(self):
        gated = "/gated/" in self.path
        body = b'{"error":"Repository Not Found"}'
        self.send_response(401 if gated else 404)
        self.send_header("X-Error-Code", "GatedRepo" if gated else "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = answer

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def empty_hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), NoSuchRepository)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def run_with_hub(endpoint: str, code: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
           "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": ROOT}
    env.pop("HF_TOKEN", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_reachability_probe_knocks_on_the_endpoints_own_port(empty_hub, tmp_path):
    code = "from align.core.hub import hub_reachable; print(hub_reachable())"
    assert run_with_hub(empty_hub, code, tmp_path).stdout.strip() == "True"
    assert run_with_hub(f"http://127.0.0.1:{closed_port()}", code, tmp_path).stdout.strip() == "False"
    assert run_with_hub("http://127.0.0.1:99999", code, tmp_path).stdout.strip() == "False"


def load_code(loader: str, name: str) -> str:
    return f"""
from align.core.errors import UserError
from align.core.hub import load_local_or_hub
from transformers import {loader}
try:
    load_local_or_hub({loader}.from_pretrained, "{name}", "model", "model.name_or_path")
except UserError as error:
    print("UserError:", error)
"""


@pytest.mark.parametrize("loader", ["AutoTokenizer", "AutoModelForCausalLM"])
def test_a_model_the_hub_does_not_have_is_named_with_its_config_key(empty_hub, tmp_path, loader):
    result = run_with_hub(empty_hub, load_code(loader, "nobody/no-such-model"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "'nobody/no-such-model' (model.name_or_path)" in result.stdout
    assert f"the hub at {empty_hub} has no such repository" in result.stdout


def test_a_gated_model_keeps_its_own_error(empty_hub, tmp_path):
    """Not 'no such repository': transformers' message for a gated repository says how to ask for access."""
    result = run_with_hub(empty_hub, load_code("AutoTokenizer", "gated/some-model"), tmp_path)
    assert result.returncode != 0 and "UserError" not in result.stdout
    assert "gated repo" in result.stderr


def test_a_dataset_the_hub_does_not_have_is_named(empty_hub, tmp_path):
    code = """
from align.core.errors import UserError
from data_prep.sources import read_source
try:
    read_source("nobody/no-such-data", "train")
except UserError as error:
    print(error)
"""
    result = run_with_hub(empty_hub, code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"dataset 'nobody/no-such-data': the hub at {empty_hub} has no such dataset" in result.stdout
