"""The canonical census: one row per member per plan election, every column text.

Employers' files are mapped onto these names by a census schema (``schemas/*.yaml``); everything after
intake speaks only these names. Carrier allowlists (``mappings/*.yaml``) name them too.
"""

from __future__ import annotations

from typing import Final

#: Columns every canonical census has, in the order the generator writes them.
CANONICAL_COLUMNS: Final[tuple[str, ...]] = (
    "member_id",          # employer's id for this person (subscriber: employee id; dependents: id-NN)
    "subscriber_id",      # the employee's member_id; equals member_id on the subscriber's rows
    "relationship",       # EE (employee), SP (spouse), CH (child)
    "last_name",
    "first_name",
    "middle_initial",
    "ssn",                # nine digits, text (keeps leading zeros)
    "dob",                # YYYY-MM-DD
    "gender",             # M, F, U
    "address1",
    "address2",
    "city",
    "state",              # USPS two-letter code
    "zip",                # five or nine digits, text
    "phone",              # ten digits
    "hire_date",          # YYYY-MM-DD (subscriber rows)
    "employment_status",  # FT, PT, TE (terminated), RT (retired)
    "department",
    "plan_code",          # canonical plan code (the schema's plan_codes map employer names onto it);
                          # mapped to the carrier's HD03/HD04 by the mapping
    "coverage_level",     # EMP, ESP, ECH, FAM (HD05)
    "coverage_start",     # YYYY-MM-DD
    "coverage_end",       # YYYY-MM-DD or empty
    # ---- member status, COBRA and Medicare (each sent only under its mapping setting)
    "benefit_status",     # INS05: A active, C COBRA, S surviving insured, T tax equity (TEFRA)
    "student_status",     # INS09: F full-time, P part-time, N not a student
    "handicap",           # INS10: Y, N
    "death_date",         # INS11/INS12: YYYY-MM-DD or empty
    "employment_end_date",  # DTP*337: YYYY-MM-DD (subscriber rows) or empty
    "event_reason",       # INS04 of this change when the employer gives one: EVENT_REASONS' names
    "event_date",         # DTP*303 of this change; empty: the run's day
    "medicare_plan",      # INS06-1: A part A, B part B, C parts A and B, D Medicare, E no Medicare
    "medicare_reason",    # INS06-2: 0 age, 1 disability, 2 end-stage renal disease
    "cobra_event",        # INS07: 1-10, ZZ (the COBRA qualifying event)
    "cobra_begin",        # DTP*340: YYYY-MM-DD or empty
    "cobra_end",          # DTP*341: YYYY-MM-DD or empty
    # ---- companion-guide depth: volumes (life, AD&D, STD, LTD); each sent only when the mapping asks
    "salary",             # the employee's wage, a plain amount (52000, 52000.00, "$52,000"): 2100A ICM02
    "salary_frequency",   # how often that wage is paid, by meaning (ANNUALLY, MONTHLY, HOURLY, ...: the
                          # names of x12.codes.IncomeFrequency, any case); the schema maps employer codes
    "coverage_amount",    # the plan line's benefit amount (volume): 2300 AMT*FK
    "premium_amount",     # the plan line's premium: 2300 AMT*P3
    "eoi_pending",        # Y when the line waits on evidence of insurability: held back, never sent
    # ---- companion-guide depth: contact (``phone`` above is the member's telephone)
    "email",              # the member's e-mail address: 2100A PER*EM (needs the extended character set)
    "mailing_address1",   # a mailing address other than the residence: 2100C N3/N4
    "mailing_address2",
    "mailing_city",
    "mailing_state",      # USPS two-letter code
    "mailing_zip",        # five or nine digits
    "language",           # ISO 639 code of the member's language (spa, eng, ...): 2100A LUI*LE
    "tobacco_use",        # Y, N or U (any case): 2100A HLH01 T (tobacco use), N (none), U (unknown)
    # ---- companion-guide depth: primary care provider (HMO/DHMO plans the mapping names)
    "pcp_npi",            # the member's primary care provider's NPI, ten digits: 2310 NM1*P3 NM109
    "pcp_existing_patient",  # Y already the provider's patient, N not, empty unknown: NM110 25/26/72
)

#: Columns without which no row can be placed in an 834 at all.
REQUIRED_COLUMNS: Final[frozenset[str]] = frozenset({
    "member_id", "subscriber_id", "relationship", "last_name", "first_name", "dob", "gender",
    "plan_code", "coverage_level", "coverage_start",
})

#: Fields a carrier allowlist must contain: the 834 cannot identify a member or coverage without them.
IDENTITY_FIELDS: Final[frozenset[str]] = frozenset({
    "member_id", "subscriber_id", "relationship", "last_name", "first_name", "plan_code",
    "coverage_level", "coverage_start",
})

#: Row number column added at read time: 1-based data row as the employer sees it (header is row 1).
ROW_NUMBER: Final[str] = "row_number"
#: ``DataFrame.attrs`` key of the reader's PHI-free warnings (day and month order) for validation's report.
READER_WARNINGS: Final[str] = "carrierfeeds_reader_warnings"


#: Canonical relationship codes (after the schema's relationship_codes): EE the employee, SP spouse,
#: CH child, DP domestic partner, SC stepchild, FC foster child, AC adopted child, WD ward, SD sponsored
#: dependent, HD handicapped dependent (a disabled adult child), XS former spouse, GC grandchild,
#: CD collateral dependent, OR other relative. Which of them a carrier takes, and as which INS02, is
#: its mapping's ``relationship_codes``.
RELATIONSHIP_CODES: Final[tuple[str, ...]] = ("EE", "SP", "CH", "DP", "SC", "FC", "AC", "WD", "SD", "HD",
                                              "XS", "GC", "CD", "OR")

#: Each canonical relationship's INS02 of the same meaning in the TR3 list (HD, a disabled adult child,
#: has none of its own in 005010: carriers take it as 19 with INS10 Y). Flat files and return files that
#: spell relationships in these words read and write them through this table.
RELATIONSHIP_INS02: Final[dict[str, str]] = {"EE": "18", "SP": "01", "CH": "19", "DP": "53", "SC": "17",
                                            "FC": "10", "AC": "09", "WD": "15", "SD": "23", "XS": "25",
                                            "GC": "05", "CD": "38", "OR": "G9"}
