"""The README is the operator's manual: every setting must be in its configuration table. The documentation stays
inside the repository: every relative link of every Markdown file leads to a file or folder that exists here."""

from __future__ import annotations

import re
from pathlib import Path

from config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented_with_its_environment_variable() -> None:
    table = README.split("<!-- settings-table", 1)[1]
    missing = [
        name
        for name in Settings.model_fields
        if f"| `{name}` |" not in table or f"PARCOURS_{name.upper()}" not in table
    ]
    assert missing == []


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in README


# Links: [text](target "title") and reference definitions "[label]: target"; code spans naming a path upwards.
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?", re.MULTILINE)
UPWARD_CODE_PATH = re.compile(r"`(\.\./[^`\s]*)`")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
SKIPPED = {"build", "dist", "node_modules", "test-artifacts"}


def markdown_files() -> list[Path]:
    """Every Markdown file of the repository (not those of virtual environments, caches or builds)."""
    return sorted(
        path
        for path in ROOT.rglob("*.md")
        if not any(
            part.startswith(".") or part in SKIPPED or part.endswith(".egg-info")
            for part in path.relative_to(ROOT).parent.parts
        )
    )


def broken_links(text: str, page: Path) -> list[str]:
    """The relative links of ``text`` (the content of ``page``) that leave the repository or lead nowhere.
    Web and mail links, and anchors within the page, are not checked."""
    text = FENCE.sub("", text)
    targets = INLINE_LINK.findall(text) + REFERENCE.findall(text) + UPWARD_CODE_PATH.findall(text)
    broken = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue
        relative = target.split("#", 1)[0].split("?", 1)[0]
        resolved = (ROOT / relative.lstrip("/") if relative.startswith("/") else page.parent / relative).resolve()
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
    return broken


def test_the_documentation_includes_the_architecture_linked_from_the_readme() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in markdown_files()}
    assert {"README.md", "docs/ARCHITECTURE.md", "clients/python/README.md"} <= names
    assert "](docs/ARCHITECTURE.md)" in README


def test_no_markdown_link_leaves_the_repository_or_leads_nowhere() -> None:
    broken = {
        path.relative_to(ROOT).as_posix(): links
        for path in markdown_files()
        if (links := broken_links(path.read_text(), path))
    }
    assert broken == {}


def test_links_out_of_the_repository_and_to_missing_files_are_found() -> None:
    page = ROOT / "docs" / "ARCHITECTURE.md"
    text = (
        '[design](../../shared/DESIGN.md), see `../../shared/DESIGN.md`; [gone](missing.md "Gone"), '
        "[readme](../README.md#testing), [web](https://temporal.io), [here](#layers)\n"
        "\n```\n[in a code block](nowhere.md)\n```\n\n[ref]: ../../outside.md\n"
    )
    assert broken_links(text, page) == [
        "../../shared/DESIGN.md: outside the repository",
        "missing.md: no such file",
        "../../outside.md: outside the repository",
        "../../shared/DESIGN.md: outside the repository",
    ]
    # What the README said before the architecture moved into the repository.
    readme = "See `../shared/DESIGN.md` for the decisions."
    assert broken_links(readme, ROOT / "README.md") == ["../shared/DESIGN.md: outside the repository"]


def test_the_tours_filters_find_runs_in_the_demo() -> None:
    """The tour's filters name a customer the demo creates, and a step every demo customer reaches at once (only
    sends before it) and stays at for a while (a wait of an hour or more), in a journey every one of them enters."""
    import inspect
    from datetime import timedelta

    from api.publishing import example_files
    from devstack.demo import demo_customer_ids, run_demo
    from journeys import load_journey_file
    from journeys.models import SendStep, WaitStep

    tour = README.split("## A short tour", 1)[1].split("\n## ", 1)[0]
    [customer] = re.findall(r'ParcoursCustomerId = "([^"]+)"', tour)
    [step_id] = re.findall(r'ParcoursStep = "([^"]+)"', tour)
    assert customer in demo_customer_ids(inspect.signature(run_demo).parameters["customers"].default)
    holding = []
    for path in example_files():
        journey = load_journey_file(path)
        if journey.trigger.event != "signed_up":  # the demo signs every customer up
            continue
        ids = [s.id for s in journey.steps]
        if step_id in ids:
            step = journey.steps[ids.index(step_id)]
            before = journey.steps[: ids.index(step_id)]
            if isinstance(step, WaitStep) and step.duration >= timedelta(hours=1):
                holding.append(all(isinstance(s, SendStep) for s in before))
    assert holding == [True]
