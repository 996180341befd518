#!/usr/bin/env node
// Mint a handoff token for sso-bridge (docs/token-handoff.md) with Node.js 18+ and its
// built-in `crypto` module only: no npm packages.
//
//   node mint_token.js PRIVATE_KEY_PEM KID AUDIENCE ISSUER SUBJECT
//
// Each argument may instead come from the environment: HANDOFF_PRIVATE_KEY, HANDOFF_KID,
// HANDOFF_AUDIENCE, HANDOFF_ISSUER, HANDOFF_SUBJECT. Optional profile claims, as a portal
// would fill them from its HR record: HANDOFF_EMAIL, HANDOFF_GIVEN_NAME,
// HANDOFF_FAMILY_NAME, HANDOFF_GROUPS (comma-separated), HANDOFF_NEXT (a deep link such
// as /courses/safety-101).
//
// The algorithm follows the key: Ed25519 -> EdDSA, EC P-256 -> ES256, RSA -> RS256.
// Prints the token on standard output.
"use strict";

const crypto = require("crypto");
const fs = require("fs");

const LIFETIME = 60; // seconds; the bridge accepts at most max_lifetime (120 by default)
const ARGS = ["HANDOFF_PRIVATE_KEY", "HANDOFF_KID", "HANDOFF_AUDIENCE", "HANDOFF_ISSUER",
  "HANDOFF_SUBJECT"];

function b64url(data) {
  return Buffer.from(data).toString("base64url");
}

function main(argv) {
  const values = ARGS.map((name, i) => argv[i] || process.env[name] || "");
  if (values.some((v) => !v)) {
    process.stderr.write("usage: node mint_token.js PRIVATE_KEY_PEM KID AUDIENCE ISSUER SUBJECT\n"
      + "  (or set " + ARGS.join(", ") + ")\n");
    return 2;
  }
  const [keyPath, kid, audience, issuer, subject] = values;

  const key = crypto.createPrivateKey(fs.readFileSync(keyPath));
  let alg;
  let sign;
  if (key.asymmetricKeyType === "ed25519") {
    alg = "EdDSA";
    sign = (data) => crypto.sign(null, data, key);
  } else if (key.asymmetricKeyType === "ec"
      && key.asymmetricKeyDetails.namedCurve === "prime256v1") {
    alg = "ES256";
    // JWS wants the raw 64-byte R||S signature, not DER.
    sign = (data) => crypto.sign("sha256", data, { key, dsaEncoding: "ieee-p1363" });
  } else if (key.asymmetricKeyType === "rsa") {
    alg = "RS256";
    sign = (data) => crypto.sign("sha256", data, key);
  } else {
    process.stderr.write(keyPath + ": use an Ed25519, EC P-256 or RSA private key\n");
    return 2;
  }

  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: issuer,
    aud: audience, // exactly https://<bridge>/token/<connection id>
    sub: subject, // the stable employee id, not the e-mail address
    iat: now,
    exp: now + LIFETIME,
    jti: crypto.randomUUID(), // single use
  };
  for (const claim of ["email", "given_name", "family_name", "next"]) {
    const value = process.env["HANDOFF_" + claim.toUpperCase()];
    if (value) claims[claim] = value;
  }
  const groups = (process.env.HANDOFF_GROUPS || "").split(",").map((g) => g.trim())
    .filter((g) => g);
  if (groups.length) claims.groups = groups;

  const header = { alg, typ: "handoff+jwt", kid };
  const signingInput = b64url(JSON.stringify(header)) + "." + b64url(JSON.stringify(claims));
  const signature = sign(Buffer.from(signingInput, "ascii"));
  process.stdout.write(signingInput + "." + b64url(signature) + "\n");
  return 0;
}

process.exitCode = main(process.argv.slice(2));
