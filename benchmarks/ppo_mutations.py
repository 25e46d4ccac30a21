"""Break one line of the PPO update at a time and show which fast tests fail: every break must fail at least one.

    python -m benchmarks.ppo_mutations            # about a minute or two per break on 2 cores

Each break is applied to a copy of this checkout (the checkout itself is never changed), then the fast PPO tests run
there. The table lists each break and the tests it failed; a break that fails none is a hole in the tests.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTS = ["tests/test_ppo_update.py", "tests/test_ppo_losses.py", "tests/test_ppo_invariants.py"]
# (what is broken, file, the line as written, the line broken)
BREAKS = [
    ("value targets from the whitened advantages", "align/rlhf/ppo_step.py",
     "    batch.rewards, batch.advantages = rewards, advantages\n",
     "    batch.rewards, batch.advantages = rewards, advantages\n"
     "    batch.returns = (advantages + batch.values) * batch.mask\n"),
    ("reference logprobs without the temperature", "align/rlhf/ppo_step.py",
     "ref_logprobs=response_logprobs(ref_logits, responses, ppo.temperature)",
     "ref_logprobs=response_logprobs(ref_logits, responses, 1.0)"),
    ("missing-EOS penalty left out", "align/rlhf/ppo_step.py",
     "scores=L.apply_missing_eos_penalty(raw_scores, has_eos, ppo.missing_eos_mode, ppo.missing_eos_penalty)",
     "scores=raw_scores"),
    ("old logprobs equal to the new", "align/rlhf/ppo_step.py",
     "L.policy_loss(logprobs, batch.logprobs[idx],", "L.policy_loss(logprobs, logprobs.detach(),"),
    ("gradients never zeroed", "align/rlhf/ppo_step.py", "            optimizer.zero_grad()\n", ""),
    ("learning-rate schedule never stepped", "align/rlhf/ppo_step.py", "    scheduler.step()", "    pass"),
    ("value target set to the advantages", "align/rlhf/ppo_step.py",
     "batch.values[idx], batch.returns[idx]", "batch.values[idx], batch.advantages[idx]"),
    ("policy's scoring pass with the LoRA adapter disabled", "align/rlhf/ppo_step.py",
     "    with torch.set_grad_enabled(keep_graph):\n",
     "    with torch.set_grad_enabled(keep_graph), as_reference():\n"),
    ("first epoch reuses the scoring pass in the wrong row order", "align/rlhf/ppo_step.py",
     "logprobs, values = (t[idx] for t in batch.first_forward)", "logprobs, values = batch.first_forward"),
    ("values read one position late", "align/rlhf/policy_value.py",
     "return values[:, context_length - 1 : -1]", "return values[:, context_length:]"),
]


def failed_tests(tree: Path) -> tuple[int, list[str]]:
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=tree,
                            capture_output=True, text=True)
    return result.returncode, [line.split(" ")[1] for line in result.stdout.splitlines()
                               if line.startswith(("FAILED", "ERROR"))]


def main() -> int:
    rows, holes = [], 0
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "align"
        ignore = shutil.ignore_patterns(".git", "outputs", "__pycache__", "*.egg-info")
        for what, path, line, broken in [("nothing (the tests as they are)", None, None, None), *BREAKS]:
            shutil.rmtree(tree, ignore_errors=True)
            shutil.copytree(REPO, tree, ignore=ignore)
            if path is not None:
                source = tree / path
                text = source.read_text()
                if text.count(line) != 1:
                    raise SystemExit(f"{path} no longer has exactly one `{line.strip()}`: update BREAKS")
                source.write_text(text.replace(line, broken))
            status, failed = failed_tests(tree)
            clean = path is None
            holes += bool(failed or status) if clean else not failed
            rows.append((what, ", ".join(name.split("::")[-1] for name in failed) or "-"))
            print(f"{what}: {rows[-1][1]}", flush=True)
    width = max(len(what) for what, _ in rows)
    print(f"\n{'break'.ljust(width)}  failing tests")
    for what, failed in rows:
        print(f"{what.ljust(width)}  {failed}")
    print("\nevery break fails a test" if not holes else f"\n{holes} break(s) fail no test, or the clean tree fails")
    return 1 if holes else 0


if __name__ == "__main__":
    sys.exit(main())
