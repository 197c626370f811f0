"""A real editor client: headless Neovim's built-in LSP client, set up by editors/neovim/layerdsl.lua."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pygls")

ROOT = Path(__file__).resolve().parents[1]

# Runs after Neovim has opened the file: wait for the server's diagnostics, write them out, quit.
_READ_BACK = """
local ok = vim.wait(60000, function() return #vim.diagnostic.get(0) > 0 end, 50)
local out = {}
for _, d in ipairs(vim.diagnostic.get(0)) do
  table.insert(out, { lnum = d.lnum, col = d.col, end_col = d.end_col, severity = d.severity, message = d.message })
end
vim.fn.writefile({ vim.fn.json_encode({ ok = ok, filetype = vim.bo.filetype, diagnostics = out }) }, vim.env.RESULT)
vim.cmd("qall!")
"""


def test_neovim_shows_the_servers_diagnostic_at_the_mistake(tmp_path):
    nvim = shutil.which("nvim")
    if nvim is None:
        pytest.skip("Neovim is not installed (scripts/setup.sh installs it with apt)")
    model = tmp_path / "model.layers"
    model.write_text("input 28x28x1\nconv2d 32 3 | relu | maxpool 2\nflaten\ndense 10\n", encoding="utf-8")
    (tmp_path / "read_back.lua").write_text(_READ_BACK, encoding="utf-8")
    result = tmp_path / "result.json"
    server = f"lua vim.g.layerdsl_lsp_cmd = {{ {json.dumps(sys.executable)}, '-m', 'layerdsl', 'lsp' }}"
    plugin = f"luafile {ROOT / 'editors' / 'neovim' / 'layerdsl.lua'}"
    env = {
        **os.environ,
        "RESULT": str(result),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    subprocess.run(
        [nvim, "--headless", "--clean", "--cmd", server, "--cmd", plugin, str(model), "-c", f"luafile {tmp_path / 'read_back.lua'}"],
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=True,
    )
    seen = json.loads(result.read_text(encoding="utf-8"))
    assert seen["filetype"] == "layers"
    assert seen["ok"], "no diagnostics arrived"
    (diagnostic,) = seen["diagnostics"]
    assert (diagnostic["lnum"], diagnostic["col"], diagnostic["end_col"]) == (2, 0, len("flaten"))  # from 0
    assert diagnostic["severity"] == 1  # vim.diagnostic.severity.ERROR
    assert diagnostic["message"].startswith("unknown layer `flaten`")
    assert "flatten" in diagnostic["message"]  # the hint's suggestion
