// Mint a handoff token for sso-bridge (docs/token-handoff.md) in C# on .NET 8, with the base
// class library only: ES256 with an EC P-256 key.
//
//   dotnet new console -n MintToken && cp MintToken.cs MintToken/Program.cs
//   dotnet run --project MintToken -- PRIVATE_KEY_PEM KID AUDIENCE ISSUER SUBJECT
//
// Each argument may instead come from the environment: HANDOFF_PRIVATE_KEY, HANDOFF_KID,
// HANDOFF_AUDIENCE, HANDOFF_ISSUER, HANDOFF_SUBJECT. Optional profile claims, as a portal
// would fill them from its HR record: HANDOFF_EMAIL, HANDOFF_GIVEN_NAME,
// HANDOFF_FAMILY_NAME, HANDOFF_GROUPS (comma-separated), HANDOFF_NEXT (a deep link such
// as /courses/safety-101).
//
// The key is a PEM EC P-256 private key ("BEGIN PRIVATE KEY" or "BEGIN EC PRIVATE KEY"), as
// written by `sso-bridge certs generate portal.pem --type ec --public-out portal.pub.pem`.
// JWS needs the raw 64-byte R||S signature, hence IeeeP1363FixedFieldConcatenation (the
// default of ECDsa.SignData is also R||S, but naming it keeps the intent visible).
// Prints the token on standard output.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

public static class MintToken
{
    private const long Lifetime = 60; // seconds; the bridge accepts at most max_lifetime
    private static readonly string[] Args =
        { "HANDOFF_PRIVATE_KEY", "HANDOFF_KID", "HANDOFF_AUDIENCE", "HANDOFF_ISSUER", "HANDOFF_SUBJECT" };

    public static int Main(string[] argv)
    {
        var values = new string[Args.Length];
        for (var i = 0; i < Args.Length; i++)
        {
            var value = i < argv.Length ? argv[i] : Environment.GetEnvironmentVariable(Args[i]);
            if (string.IsNullOrEmpty(value))
            {
                Console.Error.WriteLine("usage: MintToken PRIVATE_KEY_PEM KID AUDIENCE ISSUER SUBJECT\n"
                    + "  (or set " + string.Join(", ", Args) + ")");
                return 2;
            }
            values[i] = value;
        }
        var (keyPath, kid, audience, issuer, subject) = (values[0], values[1], values[2], values[3], values[4]);

        using var key = ECDsa.Create();
        key.ImportFromPem(File.ReadAllText(keyPath));
        if (key.ExportParameters(false).Curve.Oid?.Value != "1.2.840.10045.3.1.7") // P-256
        {
            Console.Error.WriteLine($"{keyPath}: use an EC P-256 private key");
            return 2;
        }

        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var claims = new Dictionary<string, object>
        {
            ["iss"] = issuer,
            ["aud"] = audience,                  // exactly https://<bridge>/token/<connection id>
            ["sub"] = subject,                   // the stable employee id, not the e-mail address
            ["iat"] = now,
            ["exp"] = now + Lifetime,
            ["jti"] = Guid.NewGuid().ToString(), // single use
        };
        foreach (var claim in new[] { "email", "given_name", "family_name", "next" })
        {
            var value = Environment.GetEnvironmentVariable("HANDOFF_" + claim.ToUpperInvariant());
            if (!string.IsNullOrEmpty(value))
            {
                claims[claim] = value;
            }
        }
        var groups = (Environment.GetEnvironmentVariable("HANDOFF_GROUPS") ?? "")
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .ToArray();
        if (groups.Length > 0)
        {
            claims["groups"] = groups;
        }

        var header = new Dictionary<string, object>
        {
            ["alg"] = "ES256",
            ["typ"] = "handoff+jwt",
            ["kid"] = kid,
        };
        var signingInput = B64Url(JsonSerializer.SerializeToUtf8Bytes(header)) + "."
            + B64Url(JsonSerializer.SerializeToUtf8Bytes(claims));
        var signature = key.SignData(Encoding.ASCII.GetBytes(signingInput), HashAlgorithmName.SHA256,
            DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
        Console.WriteLine(signingInput + "." + B64Url(signature));
        return 0;
    }

    private static string B64Url(byte[] data) =>
        Convert.ToBase64String(data).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
