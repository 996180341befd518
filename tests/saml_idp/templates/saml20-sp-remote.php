<?php

/*
 * Remote SAML 2.0 SPs known to the test IdP (rendered by SimpleSamlIdp.register_sp()).
 * SimpleSAMLphp reads this file on every request, so a registration takes effect at once.
 */

$metadata = {{ sps }};
