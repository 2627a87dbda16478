"""docs/policies.md lists every policy of the pack."""

from pathlib import Path

from policies import POLICIES

DOC = Path(__file__).resolve().parents[2] / "docs" / "policies.md"


def test_every_policy_is_documented():
    text = DOC.read_text()
    missing = [p.name for p in POLICIES if f"| `{p.name}` |" not in text]
    assert not missing, f"add to docs/policies.md: {missing}"


def test_readme_rule_count_is_the_pack_size():
    import re

    readme = (DOC.parents[1] / "README.md").read_text()
    counts = {int(n) for n in re.findall(r"(\d+) rules\b", readme)}
    assert counts == {len(POLICIES)}, f"README says {sorted(counts)} rules, the pack has {len(POLICIES)}"
