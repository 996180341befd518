<?php

/*
 * SimpleSAMLphp 1.19 configuration for the test IdP of tests/saml_idp.
 *
 * Rendered by SimpleSamlIdp, which replaces each placeholder by a PHP literal. Only the keys
 * that matter for a local, throwaway IdP are set; SimpleSAMLphp's defaults cover the rest.
 * Debian's own config.php (which this one replaces through SIMPLESAMLPHP_CONFIG_DIR)
 * forces secure cookies and disables the exampleauth module: both are overridden here.
 */

$config = [
    // A full URL, so that every link and endpoint names this server and its port.
    'baseurlpath' => {{ base_url }},
    'certdir' => {{ cert_dir }},
    'metadatadir' => {{ metadata_dir }},
    'metadata.sources' => [
        ['type' => 'flatfile', 'directory' => {{ metadata_dir }}],
    ],
    'datadir' => {{ data_dir }},
    'tempdir' => {{ temp_dir }},
    'loggingdir' => {{ log_dir }},

    'secretsalt' => {{ secret_salt }},
    'auth.adminpassword' => {{ admin_password }},
    'admin.protectindexpage' => false,
    'admin.protectmetadata' => false,
    'admin.checkforupdates' => false,
    'technicalcontact_name' => 'sso-bridge tests',
    'technicalcontact_email' => 'na@example.org',
    'timezone' => 'UTC',

    // ReturnTo and similar redirects may go to any port on this machine (the SPs under
    // test), and nowhere else. Each entry is a regular expression for host[:port].
    'trusted.url.regex' => true,
    'trusted.url.domains' => ['127\\.0\\.0\\.1(:[0-9]+)?', 'localhost(:[0-9]+)?'],
    'enable.http_post' => false,
    'assertion.allowed_clock_skew' => 180,

    'debug' => ['saml' => false, 'backtraces' => true, 'validatexml' => false],
    'showerrors' => true,
    'errorreporting' => false,
    'production' => true,

    // Log lines go to the PHP server's stderr, which the harness keeps in server.log.
    'logging.level' => SimpleSAML\Logger::INFO,
    'logging.handler' => 'errorlog',
    'logging.processname' => 'simplesamlphp',
    'logging.format' => '%process %level %stat[%trackid] %msg',
    'statistics.out' => [],

    'enable.saml20-idp' => true,
    'enable.shib13-idp' => false,
    'enable.adfs-idp' => false,

    'module.enable' => [
        'core' => true,
        'saml' => true,
        'admin' => true,
        'exampleauth' => true,
    ],

    // Plain http on 127.0.0.1: cookies must not be marked secure, or they never come back.
    'session.duration' => 8 * (60 * 60),
    'session.datastore.timeout' => 4 * (60 * 60),
    'session.state.timeout' => 60 * 60,
    'session.cookie.name' => 'SimpleSAMLSessionID',
    'session.cookie.lifetime' => 0,
    'session.cookie.path' => '/',
    'session.cookie.domain' => null,
    'session.cookie.secure' => false,
    'session.cookie.samesite' => null,
    'session.phpsession.cookiename' => 'SimpleSAML',
    'session.phpsession.savepath' => {{ session_dir }},
    'session.phpsession.httponly' => true,
    'session.authtoken.cookiename' => 'SimpleSAMLAuthToken',
    'session.rememberme.enable' => false,
    'store.type' => 'phpsession',

    'language.default' => 'en',
    'language.cookie.secure' => false,
    'language.cookie.samesite' => null,

    'theme.use' => 'default',
    // The old UI: Debian's package ships its dictionaries but not the new UI's locales.
    'usenewui' => false,
    'template.auto_reload' => true,
    'template.cache' => false,

    // Applied to every login: limit the attributes to what an SP's metadata lists under
    // 'attributes' (SPs without that list get all of them).
    'authproc.idp' => [
        50 => 'core:AttributeLimit',
    ],
];
