// A real OpenID Provider for the sso-bridge tests: panva's oidc-provider, configured from JSON.
//
//   node provider.mjs CONFIG.json        (or OIDC_OP_CONFIG=CONFIG.json, or the JSON itself)
//
// The config (written by tests/oidc_op/__init__.py):
//   issuer          "http://127.0.0.1:PORT" (the server listens on host and port)
//   host, port      where to listen
//   control_token   bearer token for the /__test/ control endpoints
//   cookie_keys     keys that sign the provider's cookies
//   jwks            {"keys": [private JWKs]}; for each algorithm the first key signs,
//                   every key is published at /jwks (without its private part)
//   clients         client metadata (client_id, client_secret, redirect_uris,
//                   token_endpoint_auth_method, jwks, post_logout_redirect_uris, ...)
//   users           {username: {"password": "...", "claims": {"sub": ..., ...}}}
//   scope_claims    {scope: [claim names]}: which claims each scope releases
//   conform_id_token_claims  false puts the scopes' claims into the ID token too
//   ttl             {AccessToken: seconds, ...}, merged over the defaults below
//
// Logins and consents need no browser: /interaction/:uid shows a plain HTML login form
// (username and password), and consent is granted automatically for whatever was asked.
//
// Control (Authorization: Bearer control_token):
//   GET /__test/health       -> {"ok": true}
//   PUT /__test/config       body: any of jwks, clients, users, scope_claims,
//                            conform_id_token_claims. The provider is rebuilt from the new
//                            config; sessions, grants, codes and tokens live in one store
//                            outside the provider and survive the rebuild.

import { timingSafeEqual, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';
// Not part of the package's documented API: the version is pinned exactly in package.json.
// oidc-provider's own in-memory adapter, given an unbounded store (its default store is an
// LRU of 1000 entries, which would forget a client or a session in a long test run).
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

const DEFAULT_TTL = {
  AccessToken: 3600,
  AuthorizationCode: 300,
  ClientCredentials: 600,
  DeviceCode: 600,
  BackchannelAuthenticationRequest: 600,
  Grant: 86400,
  IdToken: 3600,
  Interaction: 3600,
  RefreshToken: 86400,
  Session: 86400,
};

const RECONFIGURABLE = ['jwks', 'clients', 'users', 'scope_claims', 'conform_id_token_claims'];

// --- the store behind the adapter: a Map with expiry, as the adapter expects of its LRU ---

class Store {
  #entries = new Map();

  get(key) {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiry !== undefined && entry.expiry <= Date.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key, value, options) {
    const expiry = options?.maxAge !== undefined ? Date.now() + options.maxAge : undefined;
    this.#entries.set(key, { value, expiry });
  }

  delete(key) {
    this.#entries.delete(key);
  }

  has(key) {
    return this.get(key) !== undefined;
  }
}

const store = new Store();

// --- config -----------------------------------------------------------------------------

function readConfig() {
  const source = process.argv[2] ?? process.env.OIDC_OP_CONFIG;
  if (!source) {
    throw new Error('usage: node provider.mjs CONFIG.json (or set OIDC_OP_CONFIG)');
  }
  const text = source.trimStart().startsWith('{') ? source : readFileSync(source, 'utf8');
  const config = JSON.parse(text);
  for (const key of ['issuer', 'port', 'jwks']) {
    if (config[key] === undefined) throw new Error(`config: "${key}" is missing`);
  }
  config.host ??= '127.0.0.1';
  config.clients ??= [];
  config.users ??= {};
  config.scope_claims ??= {};
  config.cookie_keys ??= [randomBytes(32).toString('base64url')];
  config.conform_id_token_claims ??= true;
  return config;
}

let config = readConfig();

// --- accounts -----------------------------------------------------------------------------

function subjectOf(username, user) {
  return String(user.claims?.sub ?? username);
}

function userBySubject(sub) {
  for (const [username, user] of Object.entries(config.users)) {
    if (subjectOf(username, user) === sub) return [username, user];
  }
  return [undefined, undefined];
}

async function findAccount(ctx, sub) {
  const [username, user] = userBySubject(sub);
  if (user === undefined) return undefined;
  return {
    accountId: sub,
    // oidc-provider keeps only what the granted scopes and claims allow.
    async claims() {
      const current = config.users[username] ?? user;
      return { ...structuredClone(current.claims ?? {}), sub };
    },
  };
}

// --- pages --------------------------------------------------------------------------------

function esc(value) {
  return String(value ?? '')
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<h1>${esc(title)}</h1>
${body}
</body>
</html>
`;
}

function loginPage(uid, details, error) {
  const { params } = details;
  const problem = error ? `<p id="op-login-error" role="alert">${esc(error)}</p>\n` : '';
  return page(
    'Sign in',
    `<p>Test OpenID Provider. Client <code id="op-client-id">${esc(params.client_id)}</code>
asks for <code id="op-scope">${esc(params.scope)}</code>.</p>
${problem}<form id="op-login" method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
<label>Username <input name="username" required autofocus></label>
<label>Password <input type="password" name="password"></label>
<button type="submit">Sign in</button>
</form>
<form id="op-abort" method="post" action="/interaction/${esc(uid)}/abort">
<button type="submit">Cancel</button>
</form>`,
  );
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  const body = Object.entries(out)
    .map(([key, value]) => `<dt>${esc(key)}</dt><dd>${esc(value)}</dd>`)
    .join('\n');
  ctx.body = page('Error', `<dl id="op-error">\n${body}\n</dl>`);
}

async function logoutSource(ctx, form) {
  ctx.type = 'html';
  ctx.body = page(
    'Sign out',
    `<p>Do you want to sign out from ${esc(ctx.host)}?</p>
${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`,
  );
}

async function postLogoutSuccessSource(ctx) {
  ctx.type = 'html';
  const client = ctx.oidc.client?.clientId;
  ctx.body = page(
    'Signed out',
    `<p id="op-logged-out">You are signed out${client ? ` of ${esc(client)}` : ''}.</p>`,
  );
}

// --- the provider -------------------------------------------------------------------------

function buildProvider(cfg) {
  const scopeClaims = { ...cfg.scope_claims };
  const claims = { openid: ['sub'], ...scopeClaims };
  const scopes = [...new Set(['openid', 'offline_access', ...Object.keys(scopeClaims)])];
  const provider = new Provider(cfg.issuer, {
    adapter: (name) => new MemoryAdapter(name, store),
    clients: cfg.clients,
    jwks: cfg.jwks,
    findAccount,
    claims,
    scopes,
    responseTypes: ['code'],
    conformIdTokenClaims: Boolean(cfg.conform_id_token_claims),
    // PKCE with S256 (the only method oidc-provider 9 knows) for every client.
    pkce: { required: () => true },
    clientBasedCORS: () => true,
    cookies: {
      keys: cfg.cookie_keys,
      // Plain http on 127.0.0.1: oidc-provider marks cookies Secure only on https.
      long: { httpOnly: true, sameSite: 'lax', secure: false },
      short: { httpOnly: true, sameSite: 'lax', secure: false },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      claimsParameter: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
    },
    ttl: { ...DEFAULT_TTL, ...cfg.ttl },
    renderError,
  });
  return { provider, handler: provider.callback() };
}

async function checkClients(provider, clients) {
  // Static clients are validated on first use: use each one now, so that bad metadata
  // fails the change that brought it rather than a later login.
  for (const metadata of clients) {
    await provider.Client.find(metadata.client_id);
  }
}

let current = buildProvider(config);
await checkClients(current.provider, config.clients);

// --- HTTP helpers -------------------------------------------------------------------------

async function readBody(req, limit = 1 << 20) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

function sendJson(res, status, value) {
  send(res, status, `${JSON.stringify(value)}\n`, 'application/json');
}

// --- interactions: login form and automatic consent -----------------------------------------

async function grantConsent(provider, details) {
  const {
    prompt: { details: missing },
    params,
    session,
    grantId,
  } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const savedId = await grant.save();
  return grantId ? {} : { grantId: savedId };
}

async function interaction(req, res, url) {
  const { provider } = current;
  const [, , uid, action] = url.pathname.split('/');
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    send(res, 400, page('Error', `<p id="op-error">${esc(err.name)}: ${esc(err.message)}</p>`));
    return;
  }
  if (details.uid !== uid) {
    send(res, 400, page('Error', '<p id="op-error">interaction mismatch</p>'));
    return;
  }
  const prompt = details.prompt.name;

  if (req.method === 'GET' && action === undefined) {
    if (prompt === 'login') {
      send(res, 200, loginPage(uid, details));
    } else if (prompt === 'consent') {
      const consent = await grantConsent(provider, details);
      await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
    } else {
      send(res, 400, page('Error', `<p id="op-error">unknown prompt ${esc(prompt)}</p>`));
    }
    return;
  }

  if (req.method === 'POST' && action === 'login') {
    const form = new URLSearchParams(await readBody(req));
    const username = form.get('username') ?? '';
    const user = Object.hasOwn(config.users, username) ? config.users[username] : undefined;
    const expected = String(user?.password ?? '');
    const given = form.get('password') ?? '';
    const ok = user !== undefined
      && given.length === expected.length
      && timingSafeEqual(Buffer.from(given), Buffer.from(expected));
    if (!ok) {
      send(res, 401, loginPage(uid, details, 'Invalid username or password.'));
      return;
    }
    const result = { login: { accountId: subjectOf(username, user) } };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    return;
  }

  if (req.method === 'POST' && action === 'abort') {
    const result = { error: 'access_denied', error_description: 'the user cancelled the login' };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    return;
  }

  send(res, 405, page('Error', '<p id="op-error">method not allowed</p>'));
}

// --- control --------------------------------------------------------------------------------

function authorized(req) {
  const expected = Buffer.from(`Bearer ${config.control_token ?? ''}`);
  const given = Buffer.from(req.headers.authorization ?? '');
  return (
    Boolean(config.control_token)
    && given.length === expected.length
    && timingSafeEqual(given, expected)
  );
}

async function control(req, res, url) {
  if (!authorized(req)) {
    sendJson(res, 401, { error: 'unauthorized' });
    return;
  }
  if (url.pathname === '/__test/health' && req.method === 'GET') {
    sendJson(res, 200, { ok: true, pid: process.pid });
    return;
  }
  if (url.pathname === '/__test/config' && req.method === 'PUT') {
    let change;
    try {
      change = JSON.parse(await readBody(req));
    } catch (err) {
      sendJson(res, 400, { error: `not JSON: ${err.message}` });
      return;
    }
    const unknown = Object.keys(change).filter((key) => !RECONFIGURABLE.includes(key));
    if (unknown.length) {
      sendJson(res, 400, { error: `cannot change ${unknown.join(', ')}` });
      return;
    }
    const next = { ...config, ...change };
    let built;
    try {
      built = buildProvider(next);
      await checkClients(built.provider, next.clients);
    } catch (err) {
      // The old provider and config stay in force.
      sendJson(res, 400, { error: `${err.name}: ${err.message}`, detail: err.error_description });
      return;
    }
    config = next;
    current = built;
    sendJson(res, 200, { ok: true });
    return;
  }
  sendJson(res, 404, { error: 'no such control endpoint' });
}

// --- server -----------------------------------------------------------------------------------

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, config.issuer);
  try {
    if (url.pathname.startsWith('/interaction/')) {
      await interaction(req, res, url);
    } else if (url.pathname.startsWith('/__test/')) {
      await control(req, res, url);
    } else {
      current.handler(req, res);
    }
  } catch (err) {
    console.error(err);
    if (!res.headersSent) {
      send(res, 500, page('Error', `<p id="op-error">${esc(err.name)}: ${esc(err.message)}</p>`));
    } else {
      res.end();
    }
  }
});

server.on('error', (err) => {
  console.error(`oidc-op: cannot listen on ${config.host}:${config.port}: ${err.code ?? err}`);
  process.exit(err.code === 'EADDRINUSE' ? 98 : 1);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}

server.listen(config.port, config.host, () => {
  console.log(`oidc-op: ${config.issuer} ready (pid ${process.pid}, node ${process.version})`);
});
