"""generate-census fills the companion-guide columns: deterministic per seed, well formed, and accepted by
the enrollment view when a mapping asks for them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from carrierfeeds.census.generate import generate_census
from carrierfeeds.config import CarrierMapping, PlanCode, load_feed, load_mapping
from carrierfeeds.config.mapping import (
    BrokerParty,
    Contact,
    FileHeader,
    PrimaryCareProvider,
    ReportingCategory,
    Volumes,
)
from carrierfeeds.enrollment import build_enrollment
from carrierfeeds.x12.check import check_834, validate_with_pyx12
from carrierfeeds.x12.codes import IncomeFrequency
from carrierfeeds.x12.envelope import ControlNumbers, TransactionHeader
from carrierfeeds.x12.render import render_834_bytes

AS_OF = date(2026, 11, 20)


def test_same_seed_same_values_and_every_adult_column_filled() -> None:
    first, again = generate_census(300, 5, as_of=AS_OF), generate_census(300, 5, as_of=AS_OF)
    pd.testing.assert_frame_equal(first, again)
    subscribers = first[first["relationship"] == "EE"]
    assert (subscribers["salary"] != "").all()
    assert set(subscribers["salary_frequency"]) <= {m.name for m in IncomeFrequency}
    assert subscribers["salary"].str.fullmatch(r"[0-9]+\.[0-9]{2}").all()
    assert (first.loc[first["relationship"] != "EE", ["salary", "premium_amount"]] == "").all().all()
    emails = first.loc[first["email"] != "", "email"]
    assert len(emails) and emails.str.endswith("@example.com").all()
    boxes = first[first["mailing_address1"] != ""]
    assert len(boxes) and (boxes[["mailing_city", "mailing_state", "mailing_zip"]] != "").all().all()
    assert set(first["tobacco_use"]) <= {"Y", "N", "U", ""}
    assert (first.loc[first["relationship"] == "CH", "tobacco_use"] == "").all()


def test_another_seed_other_values() -> None:
    a, b = generate_census(200, 1, as_of=AS_OF), generate_census(200, 2, as_of=AS_OF)
    assert a["salary"].tolist() != b["salary"].tolist()


def test_a_generated_census_renders_with_every_guide_setting_on(tmp_path: Path) -> None:
    """Volumes, contact, PCP, reporting categories and the file header together on a generated census:
    the structural check and pyx12 accept the file."""
    root = Path(__file__).resolve().parents[2]
    feed = load_feed(root / "feeds" / "acme-sunrise-medical.yaml")
    base = load_mapping(root / "mappings" / "sunrise-health.yaml")
    extra = ("phone", "email", "mailing_address1", "mailing_address2", "mailing_city", "mailing_state",
             "mailing_zip", "language", "tobacco_use", "salary", "salary_frequency", "premium_amount",
             "pcp_npi", "pcp_existing_patient", "department")
    mapping = CarrierMapping.model_validate({
        **base.model_dump(), "charset": "extended", "allowlist": (*base.allowlist, *extra),
        "plans": {**base.plans, "MED-PPO": PlanCode(insurance_line="HMO", description="HMO GOLD")},
        "file_header": FileHeader(file_effective_date=True, control_totals=("TO", "DT", "ET"),
                                  parties=(BrokerParty(role="TV", name="Harbor TPA", id="990000123"),)),
        "volumes": Volumes(salary=True, premium=True),
        "contact": Contact(phone=True, email=True, mailing_address=True, language=True, tobacco_use=True),
        "primary_care_provider": PrimaryCareProvider(plans=("MED-PPO",)),
        "reporting_categories": (ReportingCategory(name="DEPARTMENT", field="department"),)})
    census = generate_census(40, 3, as_of=AS_OF)
    enrollment = build_enrollment(census, feed, mapping, as_of=AS_OF)
    header = TransactionHeader(ids=mapping.envelope, created=datetime(2026, 11, 21, 7, 30, tzinfo=UTC),
                               reference="CF000000007", sponsor=mapping.payer, payer=mapping.payer,
                               group_number=mapping.group_number)
    data = render_834_bytes(enrollment, header, ControlNumbers(7, 7, 1))
    report = check_834(data)
    assert report.ok, report.problems
    for segment in (b"ICM*", b"AMT*P3*", b"PER*IP**TE*", b"HLH*", b"NM1*P3*", b"LS*2700", b"QTY*TO*"):
        assert segment in data
    path = tmp_path / "generated.834"
    path.write_bytes(data)
    verdict = validate_with_pyx12(path)
    assert verdict.ok, verdict.errors
