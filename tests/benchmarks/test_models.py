"""The models benchmark's report: its section of docs/benchmarks.md is rewritten, the others kept."""

from __future__ import annotations

from pathlib import Path

from benchmarks.models import COMMAND, markdown, update_doc


def test_markdown_names_the_command_and_has_a_row_per_measure() -> None:
    section = markdown({"hybrid_seconds_per_epoch": 0.41, "n_items": 17632})
    assert f"`{COMMAND}`" in section and COMMAND.startswith("make bench")
    assert "| hybrid_seconds_per_epoch | 0.41 |" in section and "| n_items | 17632 |" in section


def test_update_doc_replaces_only_the_models_section(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\n## Models: training, evaluation, top-k\n\nold table\n\n## Serving\n\nkept\n",
        encoding="utf-8",
    )
    update_doc(markdown({"n_items": 3}), doc)
    text = doc.read_text(encoding="utf-8")
    assert "old table" not in text and "| n_items | 3 |" in text
    assert text.startswith("# Benchmarks\n\n## Models") and text.endswith("## Serving\n\nkept\n")


def test_update_doc_adds_the_section_to_a_document_without_it(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Serving\n\nkept\n", encoding="utf-8")
    update_doc(markdown({"n_items": 3}), doc)
    text = doc.read_text(encoding="utf-8")
    assert "## Serving\n\nkept\n" in text and text.rstrip().endswith("| n_items | 3 |")
