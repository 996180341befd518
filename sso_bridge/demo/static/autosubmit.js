// Demo code, not part of the product: posts the handoff form as soon as the page is ready.
// A file rather than an inline script, so the portal's CSP can forbid inline scripts.
(function () {
  "use strict";
  var form = document.getElementById("handoff");
  if (form) {
    form.submit();
  }
})();
