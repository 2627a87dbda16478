"""`trainyard review`: the Markdown report (a PR comment: summary table first, each stack's
details collapsed), within GitHub's size limit for a comment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from trainyard import diff as D

if TYPE_CHECKING:
    from trainyard.review import Review, StackReview

COMMENT_MARKER = "<!-- trainyard-review -->"
MAX_COMMENT_CHARS = 60_000  # GitHub caps a comment at 65,536 characters


def _money(x: Optional[float], signed: bool = False) -> str:
    if x is None:
        return "n/a"
    sign = ("+" if x > 0 else "−" if x < 0 else "±") if signed else ("−" if x < 0 else "")
    return f"{sign}${abs(x):,.0f}"


def _signed(n: float, unit: str = "") -> str:
    if not n:
        return "0"
    text = f"{n:+,}" if isinstance(n, int) else f"{n:+,.2f}"
    return text.replace("-", "−") + unit


def _policy_cell(sr: StackReview) -> str:
    p = sr.policy or {}
    if not p.get("available"):
        return "n/a"
    new, fixed = len(p["introduced"]), len(p["fixed"])
    if not new and not fixed:
        return "—"
    mand = sum(1 for v in p["introduced"] if v.get("level") == "mandatory")
    parts = []
    if new:
        parts.append(f"🆕 {new}" + (f" ({mand} mandatory)" if mand else ""))
    if fixed:
        parts.append(f"✅ {fixed} fixed")
    return ", ".join(parts)


def _row(sr: StackReview) -> str:
    if sr.status in ("base-invalid", "head-invalid"):
        side = "base" if sr.status == "base-invalid" else "head"
        return f"| **{sr.stack}** | {side} config invalid ||||||| "
    s = sr.diff.summary()
    label = {"added": " (new stack)", "removed": " (stack removed)"}.get(sr.status, "")
    gpus = (sr.capacity.get("delta") or {}).get("gpus", 0)
    c = sr.cost
    cost = _money(c.get("delta_monthly"), signed=True) if c.get("available") else "n/a"
    if c.get("available") and c.get("delta_monthly_at_max", c.get("delta_monthly")) != \
            c.get("delta_monthly"):
        cost += f" (at max {_money(c['delta_monthly_at_max'], signed=True)})"
    repl = f"**{s['replaced']}**" if s["replaced"] else "0"
    if s["nodes_rolled"]:
        repl += f" (+{s['nodes_rolled']} node roll{'s' if s['nodes_rolled'] > 1 else ''})"
    return (f"| **{sr.stack}**{label} | {s['added']} | {s['changed']} | {repl} | "
            f"{s['removed']} | {_policy_cell(sr)} | {cost} | {_signed(gpus)} |")


def render_markdown(rv: Review, max_changes: int = 25) -> str:
    text = _render(rv, max_changes)
    if len(text) > MAX_COMMENT_CHARS:
        text = _render(rv, 3, max_resources=40)
    if len(text) > MAX_COMMENT_CHARS:
        text = text[:MAX_COMMENT_CHARS - 200] + "\n\n… (truncated: run `trainyard review` " \
            "locally or read the JSON report)\n</details>\n"
    return text


def _render(rv: Review, max_changes: int, max_resources: int = 10_000) -> str:
    head = f"working tree at `{rv.head_commit[:7]}`" if rv.head_ref == "working tree" and \
        rv.head_commit else f"`{rv.head_ref}` (`{(rv.head_commit or '')[:7]}`)"
    if rv.dirty:
        head += " **with uncommitted changes**"
    base = f"`{rv.base_ref}` (`{rv.base_commit[:7]}`" + \
        (", merge base)" if rv.compared_with_merge_base else ")")
    out = [COMMENT_MARKER, "### trainyard review", "",
           f"{base} → {head}, {len(rv.stacks)} stack(s), offline plan under the mock runtime "
           "(no cloud credentials; ids and ARNs are placeholders, `pulumi preview` stays the "
           "authority). Policies and prices: the head's rules applied to both sides.", "",
           "| stack | + added | ~ changed | ± replaced | − removed | policy Δ | $/month Δ | "
           "GPUs Δ |", "|---|--:|--:|--:|--:|---|--:|--:|"]
    out += [_row(sr) for sr in rv.stacks]
    out.append("")

    cautions = [f"- **{sr.stack}**: {c}" for sr in rv.stacks for c in sr.cautions]
    if cautions:
        out += ["> [!CAUTION]", "> **DATA LOSS RISK**", ">"] + [f"> {c}" for c in cautions] + [""]
    errors = [f"- **{sr.stack}**: {sr.status.split('-')[0]} — "
              f"{sr.base.error if sr.status == 'base-invalid' else sr.head.error}"
              for sr in rv.stacks if sr.status.endswith("-invalid")]
    if errors:
        out += ["> [!WARNING]", "> **Stacks that could not be planned**", ">"] + \
            [f"> {e}" for e in errors] + [""]
    warns = [f"- **{sr.stack}**: {w}" for sr in rv.stacks for w in sr.warnings]
    if warns:
        out += ["> [!WARNING]"] + [f"> {w}" for w in warns] + [""]
    mand = [(sr.stack, v) for sr in rv.stacks if (sr.policy or {}).get("available")
            for v in sr.policy["introduced"] if v.get("level") == "mandatory"]
    if mand:
        out += ["> [!IMPORTANT]", "> **New mandatory policy violations** (`pulumi up` with "
                "`--policy-pack policies` will refuse)", ">"]
        out += [f"> - **{s}**: `{v.get('policy')}` on {_short(v.get('urn'))}: "
                f"{_one_line(v.get('message'))}" for s, v in mand] + [""]

    for sr in rv.stacks:
        out += _details(sr, max_changes, max_resources)
    out.append(f"<sub>trainyard review · {rv.elapsed_s:.1f} s · JSON: `trainyard review "
               f"--format json`</sub>")
    return "\n".join(out) + "\n"


def _short(urn: Optional[str]) -> str:
    if not urn:
        return "(stack)"
    return f"`{urn.rsplit('::', 1)[-1]}`"


def _one_line(text: Any, limit: int = 200) -> str:
    """One line, safe inside a Markdown table cell."""
    s = " ".join(str(text or "").split()).replace("|", "\\|")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _change_lines(r: D.ResourceDiff, max_changes: int) -> list[str]:
    lines = []
    for c in r.changes[:max_changes]:
        mark = " **(forces replacement)**" if c.path in r.replace_paths else ""
        if c.kind == "added":
            lines.append(f"  - `{c.path}`: added {D.short_value(c.new)}{mark}")
        elif c.kind == "removed":
            lines.append(f"  - `{c.path}`: removed (was {D.short_value(c.old)}){mark}")
        else:
            lines.append(f"  - `{c.path}`: {D.short_value(c.old)} → "
                         f"{D.short_value(c.new)}{mark}")
    if len(r.changes) > max_changes:
        lines.append(f"  - … {len(r.changes) - max_changes} more")
    lines += [f"  - {why}" for why in r.reasons]
    return lines


def _details(sr: StackReview, max_changes: int, max_resources: int) -> list[str]:
    bits = [sr.status]
    if sr.diff:
        s = sr.diff.summary()
        bits = [f"{n} {k}" for k, n in s.items() if n and k in
                ("added", "changed", "replaced", "removed")] or ["no resource changes"]
    if sr.cost.get("available") and sr.cost["delta_monthly"]:
        bits.append(f"{_money(sr.cost['delta_monthly'], signed=True)}/month")
    out = [f"<details><summary><b>{sr.stack}</b>: {', '.join(bits)}</summary>", ""]
    if sr.status in ("base-invalid", "head-invalid"):
        side = sr.base if sr.status == "base-invalid" else sr.head
        out += [f"The {sr.status.split('-')[0]} could not be planned: **{side.error}**", ""]
        h = sr.head_only
        if h:
            bits = [f"{h['resources']} resources"]
            if h["violations"] is not None:
                bits.append(f"{h['violations']} policy violations ({h['mandatory']} mandatory)")
            if h["monthly"] is not None:
                bits.append(f"{_money(h['monthly'])}/month at desired size"
                            + (f", {_money(h['monthly_at_max'])} at max"
                               if h["monthly_at_max"] is not None else ""))
            hc = sr.capacity["head"]
            bits.append(f"{hc['gpus']:,} GPUs and {hc['efa_interfaces']:,} EFA interfaces at "
                        "max size")
            out += ["No resource diff without a base plan. The head on its own: "
                    + "; ".join(bits) + ".", "", "</details>", ""]
            return out
        if sr.status == "head-invalid":
            return out + ["Nothing to compare until the head plans.", "", "</details>", ""]
    if sr.diff and sr.diff.resources:
        groups = [("Replaced", "replace", "±"), ("Removed", "delete", "−"),
                  ("Changed", "update", "~"), ("Added", "create", "+")]
        shown = 0
        for title, action, sym in groups:
            rs = [r for r in sr.diff.resources if r.action == action]
            if not rs:
                continue
            out.append(f"**{title}** ({len(rs)})")
            out.append("")
            for r in rs:
                shown += 1
                if shown > max_resources:
                    out.append(f"- … {len(rs)} in all")
                    break
                flag = " ⚠ **DATA LOSS RISK**" if r.data_loss_risk else ""
                roll = " (replaces nodes)" if r.rolls_nodes and action == "update" else ""
                out.append(f"- {sym} `{r.type}` **{r.name}**{roll}{flag}")
                if action in ("replace", "update"):
                    out += _change_lines(r, max_changes)
            out.append("")
    elif sr.diff:
        out += ["No resource changes.", ""]

    if sr.queues:
        out += ["**Queues** (Kueue quota and flavor order)", ""]
        out += [f"- {line}" for line in sr.queues] + [""]

    if sr.serving:
        out += ["**Serving** (traffic split, exports, replicas)", ""]
        out += [f"- {line}" for line in sr.serving] + [""]

    p = sr.policy or {}
    if p.get("available") and (p["introduced"] or p["fixed"]):
        out += ["**Policy** (head's rules on both sides)", "",
                "| | policy | level | resource | message |", "|---|---|---|---|---|"]
        for mark, key in (("🆕", "introduced"), ("✅ fixed", "fixed")):
            for v in p[key]:
                out.append(f"| {mark} | `{v.get('policy')}` | {v.get('level')} | "
                           f"{_short(v.get('urn'))} | {_one_line(v.get('message'), 160)} |")
        out.append("")
    elif p.get("available"):
        out += [f"**Policy**: no violations introduced or fixed ({p['head_total']} at head).", ""]
    else:
        out += [f"**Policy**: not compared: {p.get('note')}.", ""]

    c = sr.cost
    if c.get("available"):
        out += [f"**Cost** (head's prices): {_money(c['base_monthly'])} → "
                f"{_money(c['head_monthly'])} per month at desired size "
                f"(**{_money(c['delta_monthly'], signed=True)}**)"
                + (f"; at max size {_money(c['base_monthly_at_max'])} → "
                   f"{_money(c['head_monthly_at_max'])} "
                   f"({_money(c['delta_monthly_at_max'], signed=True)})"
                   if "delta_monthly_at_max" in c else ""), ""]
    else:
        out += [f"**Cost**: not compared: {c.get('note')}.", ""]

    cap = sr.capacity
    if cap and (cap["base"]["nodes"] or cap["head"]["nodes"]):
        d = cap.get("delta")
        out += ["**GPU capacity at max size**", "", "| | base | head | Δ |", "|---|--:|--:|--:|"]
        for key, label in (("gpus", "GPUs"), ("efa_interfaces", "EFA interfaces"),
                           ("bf16_pflops", "bf16 peak (PFLOPS, dense)"), ("nodes", "nodes")):
            delta = _signed(d[key]) if d else "n/a"
            out.append(f"| {label} | {cap['base'][key]:,} | {cap['head'][key]:,} | {delta} |")
        out.append("")
    out += ["</details>", ""]
    return out
