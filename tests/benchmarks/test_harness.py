"""benchmarks/harness.py's machine line: the CPU, its best vector ISA and the CPUs a timing had, without torch."""

import os
import subprocess
import sys

from benchmarks import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
XEON = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse2 avx2 avx512f amx_tile\n\n"


def test_the_line_names_the_isa_and_the_cpus_this_process_may_use():
    line = harness.machine(threads=1)
    assert line.startswith("machine: ") and "\n" not in line
    assert any(isa in line for isa in ("AVX-512+AMX", "AVX-512", "AVX2", "no AVX2"))
    assert f"{len(os.sched_getaffinity(0))} " in line and "logical CPUs available" in line
    assert "1 torch thread," in line and "load average" in line


def test_it_is_cheap_and_torch_free():
    code = "import sys; from benchmarks import harness; harness.machine(); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_the_best_isa_present_is_named():
    assert harness.cpu_info(XEON) == ("Intel(R) Xeon(R) Processor", "AVX-512+AMX")
    assert harness.cpu_info(XEON.replace(" amx_tile", ""))[1] == "AVX-512"
    assert harness.cpu_info(XEON.replace(" avx512f amx_tile", ""))[1] == "AVX2"
    assert harness.cpu_info("model name : Old\nflags : fpu sse2\n")[1].startswith("no AVX2")
    assert harness.cpu_info("")[0]  # no /proc/cpuinfo: still a name


def test_our_worker_runs_with_the_command_lines_process_settings_and_the_peer_with_none(monkeypatch):
    """A benchmark times our stage as `rlhf` runs it (alignment/runtime/cpu_tuning.py), the peer as its users do."""
    from alignment.runtime import cpu_tuning

    monkeypatch.delenv(harness.PEER_TUNING, raising=False)
    monkeypatch.delenv(cpu_tuning.SWITCH, raising=False)
    ours = harness.process_settings("ours-rloo", "ppo")
    assert ours["MALLOC_MMAP_THRESHOLD_"] == str(cpu_tuning.mmap_threshold("ppo")) == str(1 << 20)
    assert harness.process_settings("ours", "sft")["MALLOC_MMAP_THRESHOLD_"] == str(cpu_tuning.MMAP_THRESHOLD)
    assert ours["MALLOC_TRIM_THRESHOLD_"] == str(cpu_tuning.TRIM_THRESHOLD)
    assert ours["GOMP_SPINCOUNT"] == cpu_tuning.GOMP_SPINCOUNT
    assert harness.process_settings("trl", "ppo") == {}
    monkeypatch.setenv(harness.PEER_TUNING, "on")
    assert harness.process_settings("trl", "ppo") == ours
    monkeypatch.setenv(cpu_tuning.SWITCH, "off")
    assert harness.process_settings("ours") == {}
