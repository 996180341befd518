<?php
// Mint a handoff token for sso-bridge (docs/token-handoff.md) in PHP 7.3+ / 8.x with the
// bundled openssl extension: ES256 with an EC P-256 key.
//
//   php MintToken.php PRIVATE_KEY_PEM KID AUDIENCE ISSUER SUBJECT
//
// Each argument may instead come from the environment: HANDOFF_PRIVATE_KEY, HANDOFF_KID,
// HANDOFF_AUDIENCE, HANDOFF_ISSUER, HANDOFF_SUBJECT. Optional profile claims, as a portal
// would fill them from its HR record: HANDOFF_EMAIL, HANDOFF_GIVEN_NAME,
// HANDOFF_FAMILY_NAME, HANDOFF_GROUPS (comma-separated), HANDOFF_NEXT (a deep link such
// as /courses/safety-101).
//
// Why ES256 and not EdDSA: older PHP releases' openssl extension cannot sign with Ed25519,
// and sodium_crypto_sign_detached() wants a raw 64-byte secret key rather than a PEM file.
// openssl_sign() with an EC P-256 key works everywhere; it returns a DER signature that is
// converted below to the raw R||S form JWS requires. Create the key with
//   sso-bridge certs generate portal.pem --type ec --public-out portal.pub.pem
// Prints the token on standard output.

declare(strict_types=1);

const LIFETIME = 60; // seconds; the bridge accepts at most max_lifetime (120 by default)
const ARGS = ['HANDOFF_PRIVATE_KEY', 'HANDOFF_KID', 'HANDOFF_AUDIENCE', 'HANDOFF_ISSUER',
    'HANDOFF_SUBJECT'];

function b64url(string $data): string
{
    return rtrim(strtr(base64_encode($data), '+/', '-_'), '=');
}

/** A DER ECDSA signature (SEQUENCE of two INTEGERs) as fixed-size R||S, 32 bytes each. */
function der_to_raw(string $der, int $size = 32): string
{
    $pos = 0;
    $readLength = function () use ($der, &$pos): int {
        $length = ord($der[$pos++]);
        if ($length & 0x80) {
            $bytes = $length & 0x7f;
            $length = 0;
            for ($i = 0; $i < $bytes; $i++) {
                $length = ($length << 8) | ord($der[$pos++]);
            }
        }
        return $length;
    };
    if (ord($der[$pos++]) !== 0x30) {
        throw new RuntimeException('signature is not a DER sequence');
    }
    $readLength();
    $raw = '';
    for ($n = 0; $n < 2; $n++) {
        if (ord($der[$pos++]) !== 0x02) {
            throw new RuntimeException('signature is not two DER integers');
        }
        $length = $readLength();
        $int = ltrim(substr($der, $pos, $length), "\x00"); // drop the sign-padding byte
        $pos += $length;
        if (strlen($int) > $size) {
            throw new RuntimeException('signature integer too long');
        }
        $raw .= str_pad($int, $size, "\x00", STR_PAD_LEFT);
    }
    return $raw;
}

function main(array $argv): int
{
    $values = [];
    foreach (ARGS as $i => $name) {
        $values[] = $argv[$i] ?? (getenv($name) ?: '');
    }
    if (in_array('', $values, true)) {
        fwrite(STDERR, "usage: php MintToken.php PRIVATE_KEY_PEM KID AUDIENCE ISSUER SUBJECT\n"
            . '  (or set ' . implode(', ', ARGS) . ")\n");
        return 2;
    }
    [$keyPath, $kid, $audience, $issuer, $subject] = $values;

    $key = openssl_pkey_get_private((string) file_get_contents($keyPath));
    $details = $key === false ? false : openssl_pkey_get_details($key);
    if ($details === false || $details['type'] !== OPENSSL_KEYTYPE_EC
        || ($details['ec']['curve_name'] ?? '') !== 'prime256v1') {
        fwrite(STDERR, "$keyPath: use an EC P-256 private key (PEM)\n");
        return 2;
    }

    $now = time();
    $claims = [
        'iss' => $issuer,
        'aud' => $audience,           // exactly https://<bridge>/token/<connection id>
        'sub' => $subject,            // the stable employee id, not the e-mail address
        'iat' => $now,
        'exp' => $now + LIFETIME,
        'jti' => bin2hex(random_bytes(16)), // single use
    ];
    foreach (['email', 'given_name', 'family_name', 'next'] as $claim) {
        $value = getenv('HANDOFF_' . strtoupper($claim));
        if ($value !== false && $value !== '') {
            $claims[$claim] = $value;
        }
    }
    $groups = array_values(array_filter(array_map('trim',
        explode(',', (string) getenv('HANDOFF_GROUPS'))), 'strlen'));
    if ($groups) {
        $claims['groups'] = $groups;
    }

    $json = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR;
    $header = ['alg' => 'ES256', 'typ' => 'handoff+jwt', 'kid' => $kid];
    $signingInput = b64url(json_encode($header, $json)) . '.' . b64url(json_encode($claims, $json));
    if (!openssl_sign($signingInput, $der, $key, OPENSSL_ALGO_SHA256)) {
        fwrite(STDERR, "signing failed: " . openssl_error_string() . "\n");
        return 1;
    }
    echo $signingInput . '.' . b64url(der_to_raw($der)) . "\n";
    return 0;
}

exit(main(array_slice($argv, 1)));
