"""The methods layer imports neither Lightning nor Hydra (a user can call it on any nn.Module)."""

import subprocess
import sys


def test_explain_imports_no_lightning_or_hydra():
    code = (
        "import sys, clustercam.explain, clustercam.explain.plots, clustercam.explain.scores, "
        "clustercam.explain.concepts, clustercam.explain.gradceam\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', "
        "'hydra', 'omegaconf'))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"clustercam.explain pulled in: {out.stdout}"
