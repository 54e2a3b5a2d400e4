"""What each refusal and each processor failure answers with (api.ERRORS): its problem type, status,
headers and exactly the extension members its body always had; and the OpenAPI document naming
every cross-service problem type on the route that produces it."""

import pytest
from microshop_chassis.contracts import (
    INVALID_CARD,
    PAYMENT_DECLINED,
    PAYMENT_NOT_CAPTURED,
    PAYMENT_NOT_FOUND,
    PAYMENT_VOIDED,
)
from microshop_chassis.errors import problem_for
from microshop_payments.api import ERRORS
from microshop_payments.bootstrap import build
from microshop_payments.domain import (
    CardDeclined,
    IdempotencyKeyReused,
    InvalidCard,
    PaymentMismatch,
    PaymentNotCaptured,
    PaymentNotFound,
    PaymentVoided,
    UnknownCardToken,
)
from microshop_payments.processor import ProcessorError, ProcessorUnavailable
from microshop_payments.settings import PaymentsSettings

ANSWERS = [
    (InvalidCard("The card was refused: expired", "expired_card"), "invalid-card", 422, {"code": "expired_card"}),
    (CardDeclined(decline_code="card_declined", payment_id="p-1", order_id="o-1"), "payment-declined", 402,
     {"decline_code": "card_declined", "payment_id": "p-1", "order_id": "o-1"}),
    (PaymentMismatch(order_id="o-1", amount_cents=100, currency="USD", payment_id="p-1"), "payment-mismatch", 409,
     {"payment_id": "p-1"}),
    (IdempotencyKeyReused(), "idempotency-key-reused", 409, {}),
    (PaymentVoided("o-1"), "payment-voided", 409, {}),
    (PaymentNotCaptured("o-1"), "payment-not-captured", 409, {}),
    (PaymentNotFound("o-1"), "payment-not-found", 404, {}),
    (UnknownCardToken(), "unknown-card-token", 422, {}),
    (ProcessorUnavailable("connection refused"), "processor-unavailable", 503, {}),
    (ProcessorError(500, "boom"), "processor-error", 502, {"processor_status": 500, "code": "boom"}),
]


@pytest.mark.parametrize("error, slug, status, members", ANSWERS, ids=[type(a[0]).__name__ for a in ANSWERS])
def test_each_error_answers_with_its_problem_and_members(error, slug, status, members):
    problem = problem_for(ERRORS[type(error)], error)
    body = problem.body()
    assert body["type"] == f"https://microshop.dev/problems/{slug}" and body["status"] == status
    assert body["detail"] == str(error)
    assert {k: v for k, v in body.items() if k not in ("type", "title", "status", "detail")} == members


def test_processor_failures_keep_their_details_and_headers():
    unavailable = problem_for(ERRORS[ProcessorUnavailable], ProcessorUnavailable("timeout"))
    assert unavailable.headers == {"Retry-After": "1"}
    assert unavailable.detail == "The card processor is not reachable; retry with the same Idempotency-Key."
    error = problem_for(ERRORS[ProcessorError], ProcessorError(500, None))
    assert error.detail == "The card processor answered 500 unexpectedly." and error.headers is None


def test_the_openapi_document_names_each_cross_service_problem_on_its_route(tmp_path):
    document = build(PaymentsSettings(data_dir=tmp_path)).app.openapi()
    produced = {
        ("post", "/payment-methods"): [INVALID_CARD],
        ("post", "/charges"): [PAYMENT_DECLINED, PAYMENT_VOIDED],
        ("post", "/payments/{order_id}/refund"): [PAYMENT_NOT_CAPTURED],
        ("get", "/payments/{order_id}"): [PAYMENT_NOT_FOUND],
    }
    for (method, path), problem_types in produced.items():
        responses = document["paths"][path][method]["responses"]
        for problem_type in problem_types:
            examples = responses[str(problem_type.status)]["content"]["application/problem+json"]["examples"]
            assert examples[problem_type.slug]["value"]["type"] == problem_type.uri, (method, path)
