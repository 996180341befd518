"""The SAML 2.0 service provider, on python3-saml, stricter than the library alone.

python3-saml validates signatures, the schema, issuers and timestamps. It
leaves to the application, or checks loosely, what this module adds:
Destination and Recipient compared exactly (the library uses prefix and
substring matches), Audience required and exact, SubjectConfirmationData
NotOnOrAfter required, InResponseTo tied to a request this SP sent (and
unsolicited responses refused unless allowed), a replay cache shared by all
instances, per-connection clock skew, and the XML checks of ``saml_xml``
before anything else runs. The library's settings object is built once per
metadata version, not per login.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import xmlsec
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.constants import OneLogin_Saml2_Constants as C
from onelogin.saml2.errors import OneLogin_Saml2_Error, OneLogin_Saml2_ValidationError
from onelogin.saml2.logout_request import OneLogin_Saml2_Logout_Request
from onelogin.saml2.logout_response import OneLogin_Saml2_Logout_Response
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings

from .. import errors
from ..identity import map_identity
from ..settings import SamlConnection
from ..state import Store
from .base import Verified
from .saml_metadata import IdpMetadata
from .saml_xml import (
    NS,
    check_instants,
    check_response_structure,
    decode,
    inflate,
    install_speedups,
    parse,
    refuse_comments,
    utc_seconds,
)

# Pending AuthnRequests: how long a person may take at the IdP before the ACS refuses.
REQUEST_TTL = 15 * 60
SP_METADATA_CACHE_SECONDS = 3600

NAME_ID_FORMATS = {
    "persistent": C.NAMEID_PERSISTENT,
    "emailAddress": C.NAMEID_EMAIL_ADDRESS,
    "unspecified": C.NAMEID_UNSPECIFIED,
    "transient": C.NAMEID_TRANSIENT,
}

_CLAIMS = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
_MS_CLAIMS = "http://schemas.microsoft.com/ws/2008/06/identity/claims/"
# Names IdPs use for each identity field, tried in order: friendly names (Shibboleth,
# SimpleSAMLphp), LDAP/eduPerson OIDs, the claim URIs of ADFS and Entra ID, and the
# plain names Okta and Workday templates send. The connection's `attributes` table
# replaces a field's list with one exact name.
DEFAULT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "email": ("mail", "email", "urn:oid:0.9.2342.19200300.100.1.3", _CLAIMS + "emailaddress"),
    "given_name": (
        "givenName",
        "firstName",
        "first_name",
        "urn:oid:2.5.4.42",
        _CLAIMS + "givenname",
    ),
    "family_name": (
        "sn",
        "lastName",
        "last_name",
        "surname",
        "urn:oid:2.5.4.4",
        _CLAIMS + "surname",
    ),
    # Not the claims/name URI: Entra ID and many ADFS farms send the UPN in it.
    "display_name": (
        "displayName",
        "urn:oid:2.16.840.1.113730.3.1.241",
        "http://schemas.microsoft.com/identity/claims/displayname",
    ),
    "department": ("department", "ou", "urn:oid:2.5.4.11", _CLAIMS + "department"),
    "location": ("l", "location", "city", "urn:oid:2.5.4.7", _CLAIMS + "locality"),
    "language": ("preferredLanguage", "locale", "urn:oid:2.16.840.1.113730.3.1.39"),
    "manager": ("manager", "managerId", "urn:oid:0.9.2342.19200300.100.1.10"),
    "job_title": ("title", "jobTitle", "urn:oid:2.5.4.12", _CLAIMS + "title"),
    "groups": (
        "memberOf",
        "groups",
        "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
        _MS_CLAIMS + "groups",
        "http://schemas.xmlsoap.org/claims/Group",
    ),
    # Not employeeType: in most directories it says Employee or Contractor, which the
    # default active_statuses would read as "not active" and block everyone. Map it
    # explicitly where it does carry the employment status.
    "employment_status": ("employmentStatus", "employment_status"),
    "hire_date": ("hireDate", "hire_date", "startDate"),
}

# python3-saml's validation error codes, as the bridge's reason codes.
_V = OneLogin_Saml2_ValidationError
_LIBRARY_CODES: dict[int, type[errors.SamlRefused]] = {
    _V.UNSUPPORTED_SAML_VERSION: errors.SamlMalformed,
    _V.MISSING_ID: errors.SamlMalformed,
    _V.MISSING_STATUS: errors.SamlMalformed,
    _V.MISSING_STATUS_CODE: errors.SamlMalformed,
    _V.STATUS_CODE_IS_NOT_SUCCESS: errors.SamlStatusNotSuccess,
    _V.WRONG_NUMBER_OF_ASSERTIONS: errors.SamlSignatureWrapping,
    _V.WRONG_SIGNED_ELEMENT: errors.SamlSignatureWrapping,
    _V.ID_NOT_FOUND_IN_SIGNED_ELEMENT: errors.SamlSignatureWrapping,
    _V.DUPLICATED_ID_IN_SIGNED_ELEMENTS: errors.SamlSignatureWrapping,
    _V.INVALID_SIGNED_ELEMENT: errors.SamlSignatureWrapping,
    _V.DUPLICATED_REFERENCE_IN_SIGNED_ELEMENTS: errors.SamlSignatureWrapping,
    _V.UNEXPECTED_SIGNED_ELEMENTS: errors.SamlSignatureWrapping,
    _V.WRONG_NUMBER_OF_SIGNATURES_IN_RESPONSE: errors.SamlSignatureWrapping,
    _V.WRONG_NUMBER_OF_SIGNATURES_IN_ASSERTION: errors.SamlSignatureWrapping,
    _V.WRONG_NUMBER_OF_SIGNATURES: errors.SamlSignatureWrapping,
    _V.INVALID_XML_FORMAT: errors.SamlSchemaInvalid,
    _V.WRONG_INRESPONSETO: errors.SamlInResponseToUnknown,
    _V.NO_ENCRYPTED_ASSERTION: errors.SamlNotEncrypted,
    _V.MISSING_CONDITIONS: errors.SamlAssertionIncomplete,
    _V.ASSERTION_TOO_EARLY: errors.SamlNotYetValid,
    _V.ASSERTION_EXPIRED: errors.SamlExpired,
    _V.RESPONSE_EXPIRED: errors.SamlExpired,
    _V.SESSION_EXPIRED: errors.SamlExpired,
    _V.WRONG_NUMBER_OF_AUTHSTATEMENTS: errors.SamlAssertionIncomplete,
    _V.ENCRYPTED_ATTRIBUTES: errors.SamlAssertionIncomplete,
    _V.WRONG_DESTINATION: errors.SamlDestinationMismatch,
    _V.EMPTY_DESTINATION: errors.SamlDestinationMismatch,
    _V.WRONG_AUDIENCE: errors.SamlAudienceMismatch,
    _V.ISSUER_MULTIPLE_IN_RESPONSE: errors.SamlIssuerMismatch,
    _V.ISSUER_NOT_FOUND_IN_ASSERTION: errors.SamlIssuerMismatch,
    _V.WRONG_ISSUER: errors.SamlIssuerMismatch,
    _V.WRONG_SUBJECTCONFIRMATION: errors.SamlSubjectConfirmationInvalid,
    _V.NO_SIGNED_MESSAGE: errors.SamlSignatureMissing,
    _V.NO_SIGNED_ASSERTION: errors.SamlSignatureMissing,
    _V.NO_SIGNATURE_FOUND: errors.SamlSignatureMissing,
    _V.INVALID_SIGNATURE: errors.SamlSignatureInvalid,
    _V.NO_NAMEID: errors.SamlNameIdMissing,
    _V.EMPTY_NAMEID: errors.SamlNameIdMissing,
    _V.DUPLICATED_ATTRIBUTE_NAME_FOUND: errors.SamlDuplicateAttribute,
    # The NameID was issued for another SP: the assertion is not meant for this audience.
    _V.SP_NAME_QUALIFIER_NAME_MISMATCH: errors.SamlAudienceMismatch,
    _V.DEPRECATED_SIGNATURE_METHOD: errors.SamlAlgorithmForbidden,
    _V.DEPRECATED_DIGEST_METHOD: errors.SamlAlgorithmForbidden,
    _V.KEYINFO_NOT_FOUND_IN_ENCRYPTED_DATA: errors.SamlDecryptionFailed,
    _V.CHILDREN_NODE_NOT_FOUND_IN_KEYINFO: errors.SamlDecryptionFailed,
    _V.UNSUPPORTED_RETRIEVAL_METHOD: errors.SamlDecryptionFailed,
}

install_speedups()


# The prefix of the browser-binding cookies; the web layer passes those cookies to
# complete() next to the form fields.
BROWSER_COOKIE_PREFIX = "sso_bridge_saml_"


@dataclass(frozen=True)
class LoginStart:
    url: str
    request_id: str


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class SamlSession:
    """What single logout needs to name the person at the IdP."""

    name_id: str
    name_id_format: str | None
    session_index: str | None


class SamlConnector:
    """The SP side of one SAML connection."""

    def __init__(
        self,
        connection_id: str,
        settings: SamlConnection,
        base_url: str,
        store: Store,
        var_dir: Path,
        metadata: IdpMetadata | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection_id = connection_id
        self.settings = settings
        self.base_url = base_url
        prefix = f"{base_url}/saml/{connection_id}"
        # Every URL comes from the configured base URL, never from the request: behind a
        # TLS-terminating proxy the request says http://internal-host, the IdP says https.
        self.entity_id = settings.sp_entity_id or f"{prefix}/metadata"
        self.acs_url = f"{prefix}/acs"
        self.slo_url = f"{prefix}/slo"
        self._store = store
        self._clock = clock
        self._metadata = metadata or IdpMetadata(connection_id, settings, var_dir)
        self._sp_key = settings.sp_key_file.read_text() if settings.sp_key_file else ""
        self._sp_cert = settings.sp_cert_file.read_text() if settings.sp_cert_file else ""
        self._sp_next_cert = (
            settings.sp_next_cert_file.read_text() if settings.sp_next_cert_file else ""
        )
        self._built: tuple[int, OneLogin_Saml2_Settings, OneLogin_Saml2_Settings] | None = None
        self._sp_metadata_cache: tuple[float, bytes] | None = None
        self._sp_settings = OneLogin_Saml2_Settings(
            self._settings_dict(None), sp_validation_only=True
        )

    # -- the library's settings, once per metadata version ----------------------------------

    def _settings_dict(
        self, idp: dict[str, Any] | None, for_logout: bool = False
    ) -> dict[str, Any]:
        has_key = bool(self._sp_key)
        sp: dict[str, Any] = {
            "entityId": self.entity_id,
            "assertionConsumerService": {"url": self.acs_url, "binding": C.BINDING_HTTP_POST},
            "NameIDFormat": NAME_ID_FORMATS[self.settings.name_id_format],
            "x509cert": self._sp_cert,
            "privateKey": self._sp_key,
        }
        if self.settings.slo:
            sp["singleLogoutService"] = {"url": self.slo_url, "binding": C.BINDING_HTTP_REDIRECT}
        if self._sp_next_cert:
            sp["x509certNew"] = self._sp_next_cert
        return {
            "strict": True,
            "debug": False,
            "sp": sp,
            "idp": idp or {"entityId": "", "singleSignOnService": {"url": ""}, "x509cert": ""},
            "security": {
                "authnRequestsSigned": self.settings.sign_authn_requests,
                "logoutRequestSigned": has_key,
                "logoutResponseSigned": has_key,
                "signMetadata": has_key,
                # Logout messages by redirect must always be signed; for the login Response
                # the assertion must be, and the Response too where the admin asks for it.
                "wantMessagesSigned": for_logout or self.settings.want_response_signed,
                "wantAssertionsSigned": True,
                "wantAssertionsEncrypted": self.settings.want_assertions_encrypted,
                # With a subject attribute the NameID may be absent (or transient).
                "wantNameId": self.settings.subject_attribute is None,
                "wantNameIdEncrypted": False,
                "wantAttributeStatement": False,
                "requestedAuthnContext": False,
                "rejectDeprecatedAlgorithm": True,
                "allowRepeatAttributeName": False,
                "signatureAlgorithm": C.RSA_SHA256,
                "digestAlgorithm": C.SHA256,
                "allowSingleLabelDomains": True,
            },
        }

    def _library_settings(self) -> tuple[OneLogin_Saml2_Settings, OneLogin_Saml2_Settings]:
        idp = self._metadata.current()
        built = self._built
        if built is None or built[0] != self._metadata.version:
            login = OneLogin_Saml2_Settings(self._settings_dict(idp))
            logout = OneLogin_Saml2_Settings(self._settings_dict(idp, for_logout=True))
            built = self._built = (self._metadata.version, login, logout)
        return built[1], built[2]

    def _request_data(
        self, url: str, get: Mapping[str, str] | None = None, post: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """The request as python3-saml wants it, built from our own URL, not the request's."""
        parts = urlsplit(url)
        https = parts.scheme == "https"
        return {
            "https": "on" if https else "off",
            "http_host": parts.netloc,  # with the port, as python3-saml 1.16 wants it
            "script_name": parts.path,
            "get_data": dict(get or {}),
            "post_data": dict(post or {}),
        }

    # -- SP metadata ---------------------------------------------------------------------------

    def sp_metadata(self) -> bytes:
        """This SP's metadata for the IdP admin: signed when a key is configured.

        Built and signed at most once an hour: the endpoint is public, and the document
        only changes with the configuration (its validUntil is two days ahead).
        """
        now = self._clock()
        cached = self._sp_metadata_cache
        if cached is not None and now - cached[0] < SP_METADATA_CACHE_SECONDS:
            return cached[1]
        settings = self._sp_settings
        # python3-saml signs it already when a key is configured (security.signMetadata).
        xml = settings.get_sp_metadata()
        problems = settings.validate_metadata(xml)
        if problems:
            raise RuntimeError(f"generated SP metadata is invalid: {problems}")
        document = xml if isinstance(xml, bytes) else xml.encode()
        self._sp_metadata_cache = (now, document)
        return document

    # -- SP-initiated login ----------------------------------------------------------------------

    def begin(self, next_url: str, browser: str | None = None) -> LoginStart:
        """Start a login: the IdP URL, and the request id remembered for the ACS.

        ``browser`` is a secret the web layer also gives the browser (a cookie): the
        response to this request is then accepted only from that browser, so nobody can
        finish a login they started, in someone else's browser (login CSRF).
        """
        login_settings, _ = self._library_settings()
        auth = OneLogin_Saml2_Auth(self._request_data(self.acs_url), old_settings=login_settings)
        url = auth.login(return_to="")
        request_id = auth.get_last_request_id()
        pending = {"next": next_url, "browser": _digest(browser) if browser else None}
        self._store.set(self._request_key(request_id), json.dumps(pending), REQUEST_TTL)
        return LoginStart(str(url), request_id)

    @property
    def binds_browser(self) -> bool:
        """Only on https: the binding cookie must be SameSite=None to come back with the
        IdP's cross-site POST, and browsers accept SameSite=None only with Secure."""
        return self.base_url.startswith("https://")

    def browser_cookie(self, request_id: str) -> str:
        """One cookie per pending request, so logins started in two tabs do not collide."""
        prefix = "__Host-" if self.binds_browser else ""
        return f"{prefix}{BROWSER_COOKIE_PREFIX}{self.connection_id}_{_digest(request_id)[:16]}"

    def _request_key(self, request_id: str) -> str:
        digest = hashlib.sha256(request_id.encode()).hexdigest()
        return f"saml-request:{self.connection_id}:{digest}"

    # -- the assertion consumer service ----------------------------------------------------------

    def complete(
        self, request_data: Mapping[str, str], cookies: Mapping[str, str] | None = None
    ) -> Verified:
        """Validate the POSTed response; ``cookies`` are the browser's binding cookies.

        They come separately from the form on purpose: a field named like the cookie, in
        a form an attacker makes the victim's browser post, must not satisfy the binding.
        """
        try:
            return self._complete(request_data, cookies or {})
        except (ValueError, TypeError, xmlsec.Error) as exc:
            # Whatever the library trips over on input no check above caught is a
            # malformed message, never a 500.
            raise errors.SamlMalformed(f"{type(exc).__name__}: {exc}") from None

    def _complete(self, request_data: Mapping[str, str], cookies: Mapping[str, str]) -> Verified:
        value = request_data.get("SAMLResponse") or ""
        xml = decode(value, self.settings.max_response_bytes)
        root = parse(xml)
        check_response_structure(root)
        login_settings, _ = self._library_settings()
        response = self._library_response(login_settings, value)
        in_response_to = root.get("InResponseTo")
        browser = cookies.get(self.browser_cookie(in_response_to)) if in_response_to else None
        pending = self._pending_request(in_response_to, browser)
        try:
            response.is_valid(
                self._request_data(self.acs_url, post=request_data),
                request_id=in_response_to,
                raise_exceptions=True,
            )
        except OneLogin_Saml2_ValidationError as exc:
            if exc.code == _V.WRONG_SUBJECTCONFIRMATION:
                # The library says only "no valid SubjectConfirmation"; name which part
                # failed (Recipient, InResponseTo, expiry), as our own check does.
                raise self._confirmation_error(
                    _assertion(response), in_response_to, self._clock()
                ) or errors.SamlSubjectConfirmationInvalid(str(exc)) from None
            raise _LIBRARY_CODES.get(exc.code, errors.SamlRefused)(str(exc)) from None
        except OneLogin_Saml2_Error as exc:
            raise errors.SamlRefused(f"python3-saml: {exc}") from None
        assertion = _assertion(response)
        if response.encrypted:
            # The pre-checks saw only ciphertext: the decrypted assertion's instants get
            # the same check as everyone else's.
            check_instants(assertion)
        self._check_exact(root, assertion, in_response_to)
        try:
            # The library checks the NameID (missing, empty, SPNameQualifier) and repeated
            # attribute names only when asked for them, after is_valid, by raising its
            # ValidationError: read them here, mapped to reasons (not a 500), and before
            # the request and the assertion id are used up.
            subject, session = self._subject(response)
            attributes = _attributes(response)
        except OneLogin_Saml2_ValidationError as exc:
            raise _LIBRARY_CODES.get(exc.code, errors.SamlRefused)(str(exc)) from None
        # Mapped before anything is used up: a login refused for a missing or invalid
        # attribute can be retried once the IdP admin releases it (as for tokens).
        identity = map_identity(
            self.connection_id, self.settings, subject, attributes, self._attribute_names()
        )
        self._consume(assertion, pending, in_response_to)
        if pending is not None:
            next_url = pending.get("next")
        else:
            # IdP-initiated: RelayState is the deep link, and passes the same allow-list.
            next_url = request_data.get("RelayState") or None
        return Verified(
            identity=identity,
            next=next_url,
            session=session.__dict__,
            request_id=in_response_to if pending is not None else None,
        )

    def _library_response(self, settings: OneLogin_Saml2_Settings, value: str) -> Any:
        try:
            response = OneLogin_Saml2_Response(settings, value)
        except OneLogin_Saml2_ValidationError as exc:
            raise _LIBRARY_CODES.get(exc.code, errors.SamlDecryptionFailed)(str(exc)) from None
        except Exception as exc:
            raise errors.SamlDecryptionFailed(f"{type(exc).__name__}: {exc}") from None
        if response.encrypted:
            # The structure checks again, on what was inside the EncryptedAssertion; the
            # library's parser dropped no comment there, so refuse them as everywhere else.
            check_response_structure(response.decrypted_document)
            refuse_comments(response.decrypted_document)
        return response

    def _pending_request(
        self, in_response_to: str | None, browser: str | None
    ) -> dict[str, Any] | None:
        if in_response_to is None:
            if not self.settings.allow_unsolicited:
                raise errors.SamlUnsolicited("a response without InResponseTo (IdP-initiated)")
            return None
        raw = self._store.get(self._request_key(in_response_to))
        if raw is None:
            # InResponseTo must name a request this SP sent and has not seen answered:
            # otherwise a response for another SP session could be replayed here.
            raise errors.SamlInResponseToUnknown("InResponseTo names no pending request")
        pending: dict[str, Any] = json.loads(raw)
        bound = pending.get("browser")
        if bound is not None and not hmac.compare_digest(bound, _digest(browser or "")):
            raise errors.SamlBrowserMismatch("the response arrived in another browser")
        return pending

    def _check_exact(self, root: Any, assertion: Any, in_response_to: str | None) -> None:
        now = self._clock()
        skew = self.settings.clock_skew
        if root.get("Destination") != self.acs_url:
            raise errors.SamlDestinationMismatch(
                f"Destination {root.get('Destination')!r} is not {self.acs_url}"
            )
        restrictions = assertion.xpath("saml:Conditions/saml:AudienceRestriction", namespaces=NS)
        if not restrictions:
            raise errors.SamlAudienceMismatch("the assertion has no AudienceRestriction")
        for restriction in restrictions:
            audiences = [a.text for a in restriction.xpath("saml:Audience", namespaces=NS)]
            if self.entity_id not in audiences:
                raise errors.SamlAudienceMismatch(f"audience {audiences} does not name this SP")
        conditions = assertion.find("saml:Conditions", namespaces=NS)
        not_before = _instant(conditions.get("NotBefore"))
        not_on_or_after = _instant(conditions.get("NotOnOrAfter"))
        if not_before is not None and now + skew < not_before:
            raise errors.SamlNotYetValid(f"NotBefore is {not_before - now:.0f}s ahead")
        if not_on_or_after is not None and now - skew >= not_on_or_after:
            raise errors.SamlExpired(f"NotOnOrAfter passed {now - not_on_or_after:.0f}s ago")
        problem = self._confirmation_error(assertion, in_response_to, now)
        if problem is not None:
            raise problem

    def _confirmation_error(
        self, assertion: Any, in_response_to: str | None, now: float
    ) -> errors.SamlRefused | None:
        """None if a bearer confirmation is for exactly our ACS, for this request, unexpired.

        Otherwise the refusal naming the first requirement that no confirmation meets, so
        the reason code tells the admin what to fix (the Recipient, the request, the clock).
        """
        candidates = assertion.xpath(
            "saml:Subject/saml:SubjectConfirmation[@Method='urn:oasis:names:tc:SAML:2.0:cm:bearer']"
            "/saml:SubjectConfirmationData",
            namespaces=NS,
        )
        if not candidates:
            return errors.SamlSubjectConfirmationInvalid("no bearer SubjectConfirmationData")
        candidates = [d for d in candidates if d.get("Recipient") == self.acs_url]
        if not candidates:
            return errors.SamlRecipientMismatch(
                f"no SubjectConfirmation Recipient is {self.acs_url}"
            )
        candidates = [d for d in candidates if d.get("InResponseTo") == in_response_to]
        if not candidates:
            return errors.SamlInResponseToUnknown(
                f"no SubjectConfirmation has InResponseTo {in_response_to!r}"
            )
        expiries = [_instant(d.get("NotOnOrAfter")) for d in candidates]
        if all(expiry is None for expiry in expiries):
            return errors.SamlSubjectConfirmationInvalid(
                "SubjectConfirmationData has no NotOnOrAfter"
            )
        if not any(expiry is not None and now < expiry for expiry in expiries):
            return errors.SamlExpired("SubjectConfirmationData NotOnOrAfter has passed")
        return None

    def _subject(self, response: Any) -> tuple[str, SamlSession]:
        name_id = response.get_nameid()
        name_id_format = response.get_nameid_format()
        session = SamlSession(name_id, name_id_format, response.get_session_index())
        if self.settings.subject_attribute:
            values = response.get_attributes().get(
                self.settings.subject_attribute
            ) or response.get_friendlyname_attributes().get(self.settings.subject_attribute)
            if not values or len(values) != 1:
                raise errors.MissingAttribute(
                    f"subject attribute {self.settings.subject_attribute!r} needs one value",
                    attribute=self.settings.subject_attribute,
                )
            return values[0], session
        if name_id_format == C.NAMEID_TRANSIENT:
            # A transient NameID is new at every login: as an account key it would create a
            # new account each time, and an account could never be found again.
            raise errors.SamlNameIdTransient("a transient NameID cannot identify an account")
        return name_id, session

    def _consume(
        self, assertion: Any, pending: dict[str, Any] | None, in_response_to: str | None
    ) -> None:
        """Use up the assertion id (replay cache) and the pending request: both single use."""
        expiries = [
            _instant(v)
            for v in assertion.xpath(
                "saml:Conditions/@NotOnOrAfter"
                " | saml:Subject/saml:SubjectConfirmation/saml:SubjectConfirmationData/@NotOnOrAfter",
                namespaces=NS,
            )
        ]
        latest = max((e for e in expiries if e is not None), default=self._clock() + REQUEST_TTL)
        ttl = max(1, int(latest + self.settings.clock_skew - self._clock()) + 1)
        digest = hashlib.sha256(assertion.get("ID", "").encode()).hexdigest()
        if not self._store.add(f"saml-assertion:{self.connection_id}:{digest}", "1", ttl):
            raise errors.SamlReplayed("this assertion was already used")
        if (
            pending is not None
            and in_response_to is not None
            and self._store.pop(self._request_key(in_response_to)) is None
        ):
            raise errors.SamlInResponseToUnknown("the request was answered meanwhile")

    def _attribute_names(self) -> dict[str, tuple[str, ...]]:
        return DEFAULT_ATTRIBUTES

    # -- single logout ------------------------------------------------------------------------

    def begin_logout(self, session: Mapping[str, Any]) -> str | None:
        """The IdP URL that ends the IdP session too, or None when the IdP has no SLO."""
        if not self.settings.slo:
            return None
        login_settings, _ = self._library_settings()
        if not login_settings.get_idp_slo_url():
            return None
        auth = OneLogin_Saml2_Auth(self._request_data(self.slo_url), old_settings=login_settings)
        url = auth.logout(
            return_to="",
            name_id=session.get("name_id"),
            session_index=session.get("session_index"),
            name_id_format=session.get("name_id_format"),
        )
        request_id = auth.get_last_request_id()
        self._store.set(self._logout_key(request_id), "1", REQUEST_TTL)
        return str(url)

    def _logout_key(self, request_id: str) -> str:
        digest = hashlib.sha256(request_id.encode()).hexdigest()
        return f"saml-logout:{self.connection_id}:{digest}"

    def idp_logout(self, get_data: Mapping[str, str], session: Any) -> str:
        """Answer the IdP's LogoutRequest; return the LogoutResponse redirect.

        The request must be signed (HTTP-Redirect binding signature) and must name the
        subject of this browser's bridge session: a LogoutRequest for someone else, or a
        forged one, must not end anybody's session.
        """
        if not self.settings.slo:
            raise errors.SamlLogoutInvalid("single logout is off for this connection")
        _, logout_settings = self._library_settings()
        request_data = self._request_data(self.slo_url, get=get_data)
        raw = get_data.get("SAMLRequest", "")
        message = parse(inflate(raw))  # bounded, no DTD or comment, before the library
        # The library compares Destination by prefix and keeps no memory of requests: an
        # exact Destination, a fresh IssueInstant and a single use are checked here.
        if message.get("Destination") != self.slo_url:
            raise errors.SamlLogoutInvalid(f"Destination is not {self.slo_url}")
        check_instants(message)
        issued = _instant(message.get("IssueInstant"))
        if issued is None or abs(self._clock() - issued) > REQUEST_TTL:
            raise errors.SamlLogoutInvalid("the LogoutRequest is stale or from the future")
        try:
            logout_request = OneLogin_Saml2_Logout_Request(logout_settings, raw)
            xml = logout_request.get_xml()
            auth = OneLogin_Saml2_Auth(request_data, old_settings=logout_settings)
            if not auth.validate_request_signature(dict(get_data)):
                raise errors.SamlLogoutInvalid("the LogoutRequest is not signed by the IdP")
            logout_request.is_valid(request_data, raise_exceptions=True)
            name_id = OneLogin_Saml2_Logout_Request.get_nameid(xml)
        except errors.BridgeError:
            raise
        except Exception as exc:
            raise errors.SamlLogoutInvalid(f"LogoutRequest refused: {exc}") from None
        if session is not None and (
            session.connection != self.connection_id or session.protocol.get("name_id") != name_id
        ):
            raise errors.SamlLogoutInvalid("the LogoutRequest names another subject")
        digest = _digest(message.get("ID") or "")
        if not self._store.add(
            f"saml-logout-in:{self.connection_id}:{digest}", "1", 2 * REQUEST_TTL
        ):
            raise errors.SamlLogoutInvalid("this LogoutRequest was already answered")
        url = auth.process_slo(keep_local_session=True)
        if auth.get_errors():
            raise errors.SamlLogoutInvalid(f"LogoutRequest refused: {auth.get_errors()}")
        return str(url)

    def logout_finished(self, get_data: Mapping[str, str]) -> bool:
        """Check the IdP's LogoutResponse to our request; True if the IdP confirmed it.

        The local session is already over when this arrives, so a bad response is only
        logged by the caller: there is nothing left to protect.
        """
        login_settings, _ = self._library_settings()
        raw = get_data.get("SAMLResponse", "")
        try:
            parse(inflate(raw))
            in_response_to = OneLogin_Saml2_Logout_Response(login_settings, raw).document.get(
                "InResponseTo"
            )
        except Exception:
            return False
        if not in_response_to or self._store.pop(self._logout_key(in_response_to)) is None:
            return False
        auth = OneLogin_Saml2_Auth(
            self._request_data(self.slo_url, get=get_data), old_settings=login_settings
        )
        auth.process_slo(keep_local_session=True, request_id=in_response_to)
        return not auth.get_errors()


def _assertion(response: Any) -> Any:
    """The one assertion (decrypted where it came encrypted; the structure check made it one)."""
    return response.get_xml_document().xpath("/samlp:Response/saml:Assertion", namespaces=NS)[0]


def _attributes(response: Any) -> dict[str, list[str]]:
    """Attributes by Name, and by FriendlyName where the Name is not also used."""
    by_name: dict[str, list[str]] = response.get_attributes()
    merged = dict(response.get_friendlyname_attributes())
    merged.update(by_name)
    return merged


def _instant(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(utc_seconds(value))
    except ValueError:
        raise errors.SamlMalformed(f"{value!r} is not a SAML instant") from None
