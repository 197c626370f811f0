"""The benchmark entry point runs end to end in --quick mode (a smoke test: no time is asserted)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY = ROOT / "benchmarks" / "run.py"


def run_benchmarks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ENTRY), *args], capture_output=True, text=True, timeout=300)


def test_quick_run_prints_tables_and_writes_results_with_the_machine(tmp_path):
    results = tmp_path / "RESULTS.md"
    done = run_benchmarks("--quick", "--sections", "compiler", "--output", str(results))
    assert done.returncode == 0, done.stderr
    assert "| parse+check |" in done.stdout
    assert "| layerdsl check vgg16.layers |" in done.stdout
    text = results.read_text()
    assert text.startswith("# Benchmark results")
    assert "QUICK MODE" in text
    for line in ("- date: ", "- machine: ", "- python "):
        assert line in text
    assert "### Compiler" in text and "### CLI cold start" in text


def test_unknown_section_is_a_usage_error(tmp_path):
    results = tmp_path / "RESULTS.md"
    done = run_benchmarks("--quick", "--sections", "compiler,gpu", "--output", str(results))
    assert done.returncode == 2
    assert "unknown sections: gpu" in done.stderr
    assert not results.exists()
