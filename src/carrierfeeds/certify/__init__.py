"""Certification packets: synthetic scenario 834s for a carrier's onboarding, expected outcomes, a signed manifest."""
