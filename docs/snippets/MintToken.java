// Mint a handoff token for sso-bridge (docs/token-handoff.md) with the Java 17 standard
// library only: EdDSA with an Ed25519 key (java.security.Signature "Ed25519").
//
//   javac MintToken.java && java MintToken PRIVATE_KEY_PEM KID AUDIENCE ISSUER SUBJECT
//   (or, without compiling: java MintToken.java PRIVATE_KEY_PEM KID AUDIENCE ISSUER SUBJECT)
//
// Each argument may instead come from the environment: HANDOFF_PRIVATE_KEY, HANDOFF_KID,
// HANDOFF_AUDIENCE, HANDOFF_ISSUER, HANDOFF_SUBJECT. Optional profile claims, as a portal
// would fill them from its HR record: HANDOFF_EMAIL, HANDOFF_GIVEN_NAME,
// HANDOFF_FAMILY_NAME, HANDOFF_GROUPS (comma-separated), HANDOFF_NEXT (a deep link such
// as /courses/safety-101).
//
// The key is an unencrypted PKCS#8 PEM ("BEGIN PRIVATE KEY"), as written by
//   sso-bridge certs generate portal.pem --type ed25519 --public-out portal.pub.pem
// or `openssl genpkey -algorithm ed25519 -out portal.pem`.
// Prints the token on standard output.

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.PrivateKey;
import java.security.Signature;
import java.security.spec.InvalidKeySpecException;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;

public final class MintToken {
    private static final long LIFETIME = 60; // seconds; the bridge accepts at most max_lifetime
    private static final String[] ARGS = {"HANDOFF_PRIVATE_KEY", "HANDOFF_KID",
        "HANDOFF_AUDIENCE", "HANDOFF_ISSUER", "HANDOFF_SUBJECT"};

    public static void main(String[] argv) throws Exception {
        String[] values = new String[ARGS.length];
        for (int i = 0; i < ARGS.length; i++) {
            String value = i < argv.length ? argv[i] : System.getenv(ARGS[i]);
            if (value == null || value.isEmpty()) {
                System.err.println("usage: java MintToken PRIVATE_KEY_PEM KID AUDIENCE ISSUER SUBJECT"
                    + "\n  (or set " + String.join(", ", ARGS) + ")");
                System.exit(2);
            }
            values[i] = value;
        }
        String keyPath = values[0], kid = values[1], audience = values[2], issuer = values[3],
            subject = values[4];

        PrivateKey key = readEd25519Key(Path.of(keyPath));

        long now = System.currentTimeMillis() / 1000;
        Map<String, Object> claims = new LinkedHashMap<>();
        claims.put("iss", issuer);
        claims.put("aud", audience);           // exactly https://<bridge>/token/<connection id>
        claims.put("sub", subject);            // the stable employee id, not the e-mail address
        claims.put("iat", now);
        claims.put("exp", now + LIFETIME);
        claims.put("jti", UUID.randomUUID().toString()); // single use
        for (String claim : new String[] {"email", "given_name", "family_name", "next"}) {
            String value = System.getenv("HANDOFF_" + claim.toUpperCase());
            if (value != null && !value.isEmpty()) {
                claims.put(claim, value);
            }
        }
        List<String> groups = new ArrayList<>();
        String groupList = System.getenv("HANDOFF_GROUPS");
        if (groupList != null) {
            for (String group : groupList.split(",")) {
                if (!group.isBlank()) {
                    groups.add(group.strip());
                }
            }
        }
        if (!groups.isEmpty()) {
            claims.put("groups", groups);
        }

        Map<String, Object> header = new LinkedHashMap<>();
        header.put("alg", "EdDSA");
        header.put("typ", "handoff+jwt");
        header.put("kid", kid);

        String signingInput = b64url(json(header).getBytes(StandardCharsets.UTF_8)) + "."
            + b64url(json(claims).getBytes(StandardCharsets.UTF_8));
        Signature signer = Signature.getInstance("Ed25519");
        signer.initSign(key);
        signer.update(signingInput.getBytes(StandardCharsets.US_ASCII));
        System.out.println(signingInput + "." + b64url(signer.sign()));
    }

    private static PrivateKey readEd25519Key(Path path) throws Exception {
        String pem = Files.readString(path, StandardCharsets.US_ASCII);
        String begin = "-----BEGIN PRIVATE KEY-----";
        String end = "-----END PRIVATE KEY-----";
        int from = pem.indexOf(begin);
        int to = pem.indexOf(end);
        if (from < 0 || to < from) {
            throw new IllegalArgumentException(path + ": not a PKCS#8 PEM private key");
        }
        byte[] der = Base64.getMimeDecoder().decode(pem.substring(from + begin.length(), to));
        try {
            return KeyFactory.getInstance("Ed25519").generatePrivate(new PKCS8EncodedKeySpec(der));
        } catch (InvalidKeySpecException e) {
            throw new IllegalArgumentException(path + ": not an Ed25519 private key", e);
        }
    }

    private static String b64url(byte[] data) {
        return Base64.getUrlEncoder().withoutPadding().encodeToString(data);
    }

    // A minimal JSON writer for strings, numbers and lists of strings: enough for a token.
    private static String json(Object value) {
        if (value instanceof Map<?, ?> map) {
            StringBuilder out = new StringBuilder("{");
            for (Map.Entry<?, ?> entry : map.entrySet()) {
                if (out.length() > 1) {
                    out.append(',');
                }
                out.append(json(entry.getKey().toString())).append(':').append(json(entry.getValue()));
            }
            return out.append('}').toString();
        }
        if (value instanceof List<?> list) {
            StringBuilder out = new StringBuilder("[");
            for (Object item : list) {
                if (out.length() > 1) {
                    out.append(',');
                }
                out.append(json(item));
            }
            return out.append(']').toString();
        }
        if (value instanceof Number) {
            return value.toString();
        }
        String text = value.toString();
        StringBuilder out = new StringBuilder("\"");
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }
}
