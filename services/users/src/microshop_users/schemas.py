"""users' HTTP bodies. Requests refuse unknown fields and coerce nothing (``"name": 5`` is an
error, not ``"5"``)."""

from typing import Annotated, Literal

from microshop_chassis.schemas import RequestModel
from pydantic import AfterValidator, BaseModel, EmailStr, Field

from .domain import MAX_EMAIL_LENGTH, MIN_PASSWORD_LENGTH, check_email_length, clean_name, has_control_characters


def _no_control_characters(text: str) -> str:
    if has_control_characters(text):
        raise ValueError("must not contain control characters")
    return text


Email = Annotated[EmailStr, AfterValidator(check_email_length)]
DisplayName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(clean_name)]


class UserCreate(RequestModel):
    email: Email
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=200)
    name: DisplayName


class Registration(BaseModel):
    """The same answer whether the e-mail was new or had an account already (see the README)."""

    status: Literal["accepted"] = "accepted"
    email: str
    detail: str = "If the address can be registered, it now can be used to log in."


class UserPublic(BaseModel):
    id: str
    email: str
    name: str


class UserWithRole(UserPublic):
    role: str


class Credentials(RequestModel):
    # Not validated as an address: a login with a malformed one is just a failed login.
    email: Annotated[str, Field(max_length=MAX_EMAIL_LENGTH), AfterValidator(_no_control_characters)]
    password: str = Field(max_length=200)


class ServiceCredentials(RequestModel):
    service: str = Field(min_length=1, max_length=50, pattern=r"^[a-z][a-z0-9-]*$")
    secret: str = Field(max_length=500)


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class RotatedKey(BaseModel):
    kid: str = Field(description="The key that signs from now on.")
    published: list[str] = Field(description="Every key id in the JWKS now, oldest first.")
