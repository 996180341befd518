"""The error tree: every refusal the bridge can show a person.

A ``BridgeError`` carries a machine-readable ``code`` (the audit reason), the
HTTP status, and a public message written for the person in front of the
browser. ``detail`` is for the audit log and the admin only; it never reaches
the browser, and neither does ``str(exc)`` of anything else.
"""

from __future__ import annotations

from typing import Any, ClassVar


class BridgeError(Exception):
    """A refusal with a reason code, a status and a message a person can act on."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 400
    public_message: ClassVar[str] = (
        "We could not sign you in. Please go back to your portal and try again."
    )

    def __init__(self, detail: str = "", **context: Any) -> None:
        super().__init__(detail or self.code)
        self.detail = detail
        self.context = context

    def public_hint(self) -> str | None:
        """A further line for the page, only where it is safe and useful to show."""
        return None


# -- requests the bridge refuses before any protocol runs --------------------------------


class RequestTooLarge(BridgeError):
    code = "request_too_large"
    status = 413
    public_message = "The sign-in request was too large to accept."


class UnknownConnection(BridgeError):
    code = "unknown_connection"
    status = 404
    public_message = "This sign-in link is not configured. Ask your IT team for the right link."


class MethodNotAllowed(BridgeError):
    code = "method_not_allowed"
    status = 405
    public_message = "This sign-in link must be opened from your portal."


class NextNotAllowed(BridgeError):
    code = "next_not_allowed"
    public_message = (
        "The link you followed points to a page outside the learning platform, so we stopped."
    )


class RateLimited(BridgeError):
    code = "rate_limited"
    status = 429
    public_message = (
        "Too many sign-in attempts from your network. Please wait a minute and try again."
    )


class OriginNotAllowed(BridgeError):
    code = "origin_not_allowed"
    status = 403
    public_message = (
        "This sign-in was sent from a page that is not your company portal, so we stopped it."
    )


class NoLogin(BridgeError):
    code = "login_required"
    status = 401
    public_message = "Please start from your company portal to sign in to the learning platform."


# -- upstream assertions (tokens, SAML, OIDC) ---------------------------------------------


class InvalidAssertion(BridgeError):
    """An upstream sign-in message that is not exactly valid."""

    code = "assertion_invalid"
    public_message = (
        "Your portal sent a sign-in message we could not accept. "
        "Please go back to the portal and click the link again."
    )


class MalformedToken(InvalidAssertion):
    code = "token_malformed"


class TokenTooLarge(InvalidAssertion):
    code = "token_too_large"
    status = 413


class ForbiddenAlgorithm(InvalidAssertion):
    code = "token_alg_forbidden"


class AlgorithmKeyMismatch(InvalidAssertion):
    code = "token_alg_key_mismatch"


class ForbiddenHeader(InvalidAssertion):
    code = "token_header_forbidden"


class InvalidType(InvalidAssertion):
    code = "token_typ_invalid"


class MissingKeyId(InvalidAssertion):
    code = "token_kid_missing"


class InvalidKeyId(InvalidAssertion):
    code = "token_kid_invalid"


class UnknownKey(InvalidAssertion):
    code = "token_kid_unknown"


class BadSignature(InvalidAssertion):
    code = "token_signature_invalid"


class MissingClaim(InvalidAssertion):
    code = "token_claim_missing"


class InvalidClaim(InvalidAssertion):
    code = "token_claim_invalid"


class IssuerMismatch(InvalidAssertion):
    code = "token_issuer_mismatch"


class AudienceMismatch(InvalidAssertion):
    code = "token_audience_mismatch"


class ExpiredToken(InvalidAssertion):
    code = "token_expired"
    public_message = (
        "Your sign-in link has expired. Please go back to your portal and click it again."
    )


class TokenNotYetValid(InvalidAssertion):
    code = "token_not_yet_valid"
    public_message = (
        "Your sign-in link is not valid yet; your portal's clock may be ahead. "
        "Please try again in a minute."
    )


class LifetimeExceeded(InvalidAssertion):
    code = "token_lifetime_exceeded"


class ReplayedToken(InvalidAssertion):
    code = "token_replayed"
    public_message = (
        "This sign-in link was already used. Please go back to your portal and click it again."
    )


class KeySetUnavailable(InvalidAssertion):
    code = "token_keys_unavailable"
    status = 503
    public_message = (
        "We could not check your sign-in right now because your portal's keys are "
        "unreachable. Please try again in a few minutes."
    )


# -- SAML ----------------------------------------------------------------------------------


class SamlRefused(InvalidAssertion):
    """A SAML message that is not exactly valid."""

    code = "saml_invalid"
    public_message = (
        "Your company's sign-in service sent a message we could not accept. "
        "Please go back to your portal and try again; if it keeps happening, "
        "tell your IT team and quote the reference below."
    )


class SamlMissing(SamlRefused):
    code = "saml_response_missing"


class SamlTooLarge(SamlRefused):
    code = "saml_too_large"
    status = 413


class SamlMalformed(SamlRefused):
    code = "saml_malformed"


class SamlXmlForbidden(SamlRefused):
    """A DTD, entity, comment or processing instruction: never needed, often an attack."""

    code = "saml_xml_forbidden"


class SamlSchemaInvalid(SamlRefused):
    code = "saml_schema_invalid"


class SamlAlgorithmForbidden(SamlRefused):
    code = "saml_algorithm_forbidden"


class SamlTransformForbidden(SamlRefused):
    code = "saml_transform_forbidden"


class SamlSignatureMissing(SamlRefused):
    code = "saml_signature_missing"


class SamlSignatureInvalid(SamlRefused):
    code = "saml_signature_invalid"


class SamlSignatureWrapping(SamlRefused):
    code = "saml_signature_wrapping"


class SamlDecryptionFailed(SamlRefused):
    code = "saml_decryption_failed"


class SamlNotEncrypted(SamlRefused):
    code = "saml_not_encrypted"


class SamlStatusNotSuccess(SamlRefused):
    code = "saml_status_not_success"
    public_message = (
        "Your company's sign-in service did not sign you in (it may have been cancelled). "
        "Please go back to your portal and try again."
    )


class SamlIssuerMismatch(SamlRefused):
    code = "saml_issuer_mismatch"


class SamlAudienceMismatch(SamlRefused):
    code = "saml_audience_mismatch"


class SamlDestinationMismatch(SamlRefused):
    code = "saml_destination_mismatch"


class SamlRecipientMismatch(SamlRefused):
    code = "saml_recipient_mismatch"


class SamlSubjectConfirmationInvalid(SamlRefused):
    code = "saml_subject_confirmation_invalid"


class SamlExpired(SamlRefused):
    code = "saml_expired"
    public_message = (
        "Your sign-in took too long or your computer's clock is off. "
        "Please go back to your portal and try again."
    )


class SamlNotYetValid(SamlRefused):
    code = "saml_not_yet_valid"


class SamlAssertionIncomplete(SamlRefused):
    code = "saml_assertion_incomplete"


class SamlDuplicateAttribute(SamlRefused):
    code = "saml_duplicate_attribute"


class SamlNameIdMissing(SamlRefused):
    code = "saml_name_id_missing"


class SamlNameIdTransient(SamlRefused):
    code = "saml_name_id_transient"


class SamlInResponseToUnknown(SamlRefused):
    code = "saml_in_response_to_unknown"
    public_message = (
        "This sign-in was not started here, or it was already completed or took too long. "
        "Please go back to your portal and try again."
    )


class SamlBrowserMismatch(SamlRefused):
    code = "saml_browser_mismatch"
    public_message = (
        "This sign-in was started in another browser, or your browser blocked a cookie it "
        "needs. Please start again from the learning platform in this browser."
    )


class SamlUnsolicited(SamlRefused):
    code = "saml_unsolicited"
    public_message = (
        "Sign-in must start from the learning platform for this connection. "
        "Please use the link your IT team gave you."
    )


class SamlReplayed(SamlRefused):
    code = "saml_replayed"
    public_message = (
        "This sign-in message was already used. Please go back to your portal and try again."
    )


class SamlMetadataUnavailable(SamlRefused):
    code = "saml_metadata_unavailable"
    status = 503
    public_message = (
        "Sign-in through your company is temporarily unavailable. Please try again later."
    )


class SamlLogoutInvalid(SamlRefused):
    code = "saml_logout_invalid"


# -- OpenID Connect and OAuth2 -----------------------------------------------------------------


class OidcRefused(InvalidAssertion):
    """An OpenID Connect or OAuth2 login that is not exactly valid."""

    code = "oidc_invalid"
    public_message = (
        "Your company's sign-in service sent an answer we could not accept. "
        "Please go back to your portal and try again; if it keeps happening, "
        "tell your IT team and quote the reference below."
    )


class OidcStateMissing(OidcRefused):
    code = "oidc_state_missing"


class OidcStateUnknown(OidcRefused):
    code = "oidc_state_unknown"
    public_message = (
        "This sign-in was not started here, was already completed, or took too long. "
        "Please start again from the learning platform."
    )


class OidcBrowserMismatch(OidcRefused):
    code = "oidc_browser_mismatch"
    public_message = (
        "This sign-in was started in another browser, or your browser blocked a cookie it "
        "needs. Please start again from the learning platform in this browser."
    )


class OidcProviderError(OidcRefused):
    """The provider answered the authorization request with an error."""

    code = "oidc_provider_error"
    public_message = (
        "Your company's sign-in service did not sign you in (it may have been cancelled). "
        "Please try again."
    )


class OidcIssuerParameterMismatch(OidcRefused):
    """RFC 9207: the callback's `iss` is missing or names another provider (mix-up)."""

    code = "oidc_iss_parameter_mismatch"


class OidcTokenRequestFailed(OidcRefused):
    code = "oidc_token_request_failed"


class OidcIdTokenMalformed(OidcRefused):
    code = "oidc_id_token_malformed"


class OidcAlgorithmForbidden(OidcRefused):
    code = "oidc_alg_forbidden"


class OidcKeyUnknown(OidcRefused):
    code = "oidc_kid_unknown"


class OidcSignatureInvalid(OidcRefused):
    code = "oidc_signature_invalid"


class OidcIssuerMismatch(OidcRefused):
    code = "oidc_issuer_mismatch"


class OidcAudienceMismatch(OidcRefused):
    code = "oidc_audience_mismatch"


class OidcClaimMissing(OidcRefused):
    code = "oidc_claim_missing"


class OidcExpired(OidcRefused):
    code = "oidc_expired"


class OidcNotYetValid(OidcRefused):
    code = "oidc_not_yet_valid"


class OidcNonceMismatch(OidcRefused):
    code = "oidc_nonce_mismatch"


class OidcUserinfoMismatch(OidcRefused):
    code = "oidc_userinfo_sub_mismatch"


class OidcClaimNotAllowed(OidcRefused):
    """A claim restricted by the connection (Entra `tid`, Google `hd`) has another value."""

    code = "oidc_claim_not_allowed"
    status = 403
    public_message = (
        "Your account belongs to an organisation this learning platform does not accept. "
        "Please sign in with your work account."
    )


class OidcDiscoveryInvalid(OidcRefused):
    code = "oidc_discovery_invalid"
    status = 503
    public_message = (
        "Sign-in through your company is misconfigured or unavailable. "
        "Please try again later and tell your IT team."
    )


class OidcProviderUnavailable(OidcRefused):
    code = "oidc_provider_unavailable"
    status = 503
    public_message = (
        "Sign-in through your company is temporarily unavailable. Please try again later."
    )


# -- identity and provisioning ------------------------------------------------------------


class MissingAttribute(BridgeError):
    code = "attribute_missing"
    public_message = (
        "Your company's sign-in service did not send all the information the learning "
        "platform needs. Please tell your IT team and quote the reference below."
    )

    def public_hint(self) -> str | None:
        # The attribute's name is configuration, not a secret, and it is exactly what the
        # IdP admin must release: say it on the page.
        return (
            f"For your IT team: the attribute “{self.context.get('attribute')}” was not "
            "released to the learning platform."
        )


class InvalidAttribute(BridgeError):
    code = "attribute_invalid"
    public_message = (
        "Your portal sent account information we could not accept. "
        "Please tell your IT team and quote the reference below."
    )


class AccountBlocked(BridgeError):
    code = "user_blocked"
    status = 403
    public_message = (
        "Your account is not allowed to use the learning platform. "
        "If you think this is wrong, contact your HR or IT team and quote the reference below."
    )


class ProvisioningBusy(BridgeError):
    code = "provisioning_busy"
    status = 503
    public_message = (
        "Your account is being set up by another sign-in right now. Please try again in a moment."
    )


# -- dependencies -------------------------------------------------------------------------


class StoreUnavailable(BridgeError):
    code = "store_unavailable"
    status = 503
    public_message = "Sign-in is temporarily unavailable. Please try again in a few minutes."


class DatabaseUnavailable(BridgeError):
    code = "database_unavailable"
    status = 503
    public_message = "Sign-in is temporarily unavailable. Please try again in a few minutes."
