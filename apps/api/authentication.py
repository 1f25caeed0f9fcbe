"""``Authorization: Token <key>`` for scripts; browsers use the session."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from apps.api import services
from apps.api.models import ApiToken
from apps.directory.models import User


class TokenAuthentication(BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request: Request) -> tuple[User, ApiToken] | None:
        words = get_authorization_header(request).split()
        if not words or words[0].lower() != self.keyword.lower().encode():
            return None
        if len(words) != 2:
            raise AuthenticationFailed("the header must be 'Authorization: Token <key>'")
        try:
            key = words[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("invalid token") from None
        token = services.token_for_key(key)
        if token is None:
            raise AuthenticationFailed("invalid or revoked token, or disabled account")
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 with WWW-Authenticate, not 403, without credentials.
        return self.keyword


class TokenScheme(OpenApiAuthenticationExtension):
    target_class = "apps.api.authentication.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: object) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>`; create a key with `manage.py createapitoken LOGIN` "
                           "or POST /api/v1/tokens/",
        }
