<?php

/*
 * Authentication sources of the test IdP: the admin login and one exampleauth:UserPass
 * source with the test users (rendered by SimpleSamlIdp from USERS in
 * tests/saml_idp/__init__.py). Test passwords only.
 */

$config = [
    'admin' => ['core:AdminPassword'],

    'example-userpass' => array_merge(
        ['exampleauth:UserPass'],
        {{ users }}
    ),
];
