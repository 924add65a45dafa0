// SkySaga demo page: start-up; loaded last.
// Loaded after /app.js (helpers, routing); see ui.rs for the load order.

// ---------- start ----------

(function init() {
  const d = new Date();
  d.setDate(d.getDate() + 14);
  $("search-date").value = isoDate(d);
  $("search-date").min = isoDate(new Date());
  $("search-return").min = isoDate(new Date());
  route();
})();
