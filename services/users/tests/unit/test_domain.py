from microshop_users.domain import normalize_email


def test_emails_compare_case_insensitively():
    assert normalize_email("  Ada@Example.COM ") == "ada@example.com"
