"""docs/reference.md is generated from the configuration models: it must be current, and every field of a
census schema, a carrier mapping and a feed must carry a description."""

from __future__ import annotations

from pathlib import Path

from carrierfeeds.config.reference import main, missing_descriptions, render_reference

ROOT = Path(__file__).resolve().parents[1]


def test_every_configuration_field_has_a_description() -> None:
    assert missing_descriptions() == []


def test_docs_reference_md_is_current() -> None:
    """Fails after a model or description changed: run `python -m carrierfeeds.config.reference`."""
    assert (ROOT / "docs" / "reference.md").read_text(encoding="utf-8") == render_reference()


def test_the_reference_names_every_field_and_the_check_catches_a_stale_file(tmp_path: Path) -> None:
    from carrierfeeds.config import CarrierMapping, CensusSchema, Feed

    text = render_reference()
    for model in (Feed, CarrierMapping, CensusSchema):
        for name in model.model_fields:
            assert f"| `{name}` |" in text, f"{model.__name__}.{name}"
    assert "| `header_row` | integer | `1` |" in text
    path = tmp_path / "reference.md"
    assert main([str(path)]) == 0 and main(["--check", str(path)]) == 0
    path.write_text(text.replace("header_row", "header_rows"), encoding="utf-8")
    assert main(["--check", str(path)]) == 1
