from pydantic import BaseModel, EmailStr, Field

from .domain import MIN_PASSWORD_LENGTH


class UserCreate(BaseModel):
    email: EmailStr
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=200)
    name: str = Field(min_length=1, max_length=200)


class UserPublic(BaseModel):
    id: str
    email: str
    name: str


class UserWithRole(UserPublic):
    role: str


class Credentials(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=200)


class ServiceCredentials(BaseModel):
    service: str = Field(min_length=1, max_length=50, pattern=r"^[a-z][a-z0-9-]*$")
    secret: str = Field(max_length=500)


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
