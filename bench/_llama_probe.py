"""Work around a llama.cpp build that crashes on this machine (shared by the bench scripts).

llama-cpp-python compiled from source with GGML_NATIVE (its default) enables ggml's AMX kernels when the build
CPU advertises AMX. On the 2-core Firecracker VMs this project runs on, the CPU flags list amx_tile/amx_int8 but
the first `ldtilecfg` in `ggml_backend_amx_mul_mat` segfaults, so every local LM call kills the process. The AMX
kernels are only reached through llama.cpp's "extra buffer types" (weight repacking); loading the model with
`use_extra_bufts = false` avoids them.

`prepare(mode)`: "auto" runs one tiny real call through `optimizer.lm.LocalBackend` in a subprocess and applies the
workaround only if that subprocess dies; "on" always applies it; "off" never does. Returns a one-line note for the
report. The workaround patches `llama_cpp.llama_model_default_params` in this process only (nothing on disk).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_PROBE = """
import sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from optimizer.lm import LocalBackend, LMRequest
backend = LocalBackend("local/smollm2-135m", threads=1, n_ctx=512, cache_dir=Path(tempfile.gettempdir()))
print(repr(backend.call(LMRequest(messages=({"role": "user", "content": "Say hi"},), max_tokens=2), 60).text))
"""


def apply_workaround() -> None:
    import llama_cpp
    import llama_cpp.llama as llama_module

    original = llama_cpp.llama_model_default_params
    if getattr(original, "_formfit_bench_patched", False):
        return

    def params():
        p = original()
        p.use_extra_bufts = False
        return p

    params._formfit_bench_patched = True  # type: ignore[attr-defined]
    llama_cpp.llama_model_default_params = params
    llama_module.llama_cpp.llama_model_default_params = params


def probe() -> int:
    """Return code of one tiny unpatched local call in a subprocess (0 = fine, -11 = segfault)."""
    done = subprocess.run([sys.executable, "-c", _PROBE, str(ROOT)], capture_output=True, text=True, timeout=300,
                          env={**os.environ})
    return done.returncode


def prepare(mode: str) -> str:
    if mode == "off":
        return "llama.cpp as installed (use_extra_bufts default)"
    if mode == "on":
        apply_workaround()
        return "workaround forced: model loaded with use_extra_bufts=false (no AMX / repacked weights)"
    code = probe()
    if code == 0:
        return "probe: an unpatched local call works; llama.cpp used as installed"
    apply_workaround()
    return (f"probe: an unpatched local call died (return code {code}; -11 = SIGSEGV in ggml_backend_amx_mul_mat); "
            "measured with the workaround use_extra_bufts=false (no AMX / repacked weights)")


def build_info() -> str:
    """llama-cpp-python version and the CPU features its llama.cpp build uses (e.g. `AVX2 = 1`, `AMX_INT8 = 1`)."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    flags = [part.strip() for part in info.replace("|", ";").split(";") if part.strip().endswith("= 1")]
    return f"llama-cpp-python {llama_cpp.__version__}, build features: {' '.join(f.split(' =')[0] for f in flags)}"
