<?php

/*
 * The hosted SAML 2.0 IdP (rendered by SimpleSamlIdp; rewritten by rotate_key()).
 *
 * 'privatekey' / 'certificate' sign everything. 'new_certificate', when set, is published
 * in the metadata as a second signing certificate (SimpleSAMLphp's key rollover option).
 */

$metadata[{{ entity_id }}] = array_merge([
    'host' => '__DEFAULT__',
    'auth' => 'example-userpass',
    'userid.attribute' => 'uid',

    'signature.algorithm' => 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
    'saml20.sign.assertion' => true,
    'saml20.sign.response' => false,
    'sign.logout' => true,

    // Attribute names are the LDAP-style friendly names (uid, mail, givenName, ...),
    // sent with the basic NameFormat; SPs may override 'attributes.NameFormat'.
    'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic',

    'NameIDFormat' => [
        'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent',
        'urn:oasis:names:tc:SAML:2.0:nameid-format:transient',
        'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
    ],
    // No IdP-wide 'simplesaml.nameidattribute': each SP sets its own (register_sp), and an
    // SP without one gets SimpleSAMLphp's opaque persistent id (a hash of the uid per SP).
], {{ keys }});
