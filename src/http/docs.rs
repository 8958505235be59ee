//! `GET /docs/`: Swagger UI for the served OpenAPI document, built into the binary so it
//! works offline. Only the files the page loads are embedded (build.rs takes them from
//! the Swagger UI release vendored in `utoipa-swagger-ui-vendored`): the whole release,
//! with its source maps and alternative bundles, would add 11 MiB to a binary that runs
//! beside every VM.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};

/// The page: Swagger UI's own `index.html`, pointing at our initializer.
const INDEX: &str = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>virt-probe-gateway API</title>
    <link rel="stylesheet" type="text/css" href="./swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="./index.css" />
    <link rel="icon" type="image/png" href="./favicon-32x32.png" sizes="32x32" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="./swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script src="./swagger-initializer.js" charset="UTF-8"></script>
  </body>
</html>
"#;

/// Loads the document this gateway serves.
const INITIALIZER: &str = r##"window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
  });
};
"##;

macro_rules! asset {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/swagger-ui/", $name)).as_slice()
    };
}

/// The files of `/docs/`: name, content type, bytes.
const FILES: [(&str, &str, &[u8]); 8] = [
    ("", "text/html; charset=utf-8", INDEX.as_bytes()),
    ("index.html", "text/html; charset=utf-8", INDEX.as_bytes()),
    (
        "swagger-initializer.js",
        "text/javascript; charset=utf-8",
        INITIALIZER.as_bytes(),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        asset!("swagger-ui.css"),
    ),
    ("index.css", "text/css; charset=utf-8", asset!("index.css")),
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        asset!("swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui-standalone-preset.js",
        "text/javascript; charset=utf-8",
        asset!("swagger-ui-standalone-preset.js"),
    ),
    (
        "favicon-32x32.png",
        "image/png",
        asset!("favicon-32x32.png"),
    ),
];

/// `GET /docs/{file}`.
pub(super) async fn file(name: web::Path<String>) -> HttpResponse {
    match FILES.iter().find(|(file, ..)| *file == name.as_str()) {
        Some((_, content_type, bytes)) => HttpResponse::Ok()
            .content_type(*content_type)
            // The assets change only with the binary.
            .insert_header((
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=3600"),
            ))
            .body(*bytes),
        None => HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body(format!("not found: /docs/{name}")),
    }
}

/// `GET /docs`: on to `/docs/` (the assets are relative to it).
pub(super) async fn redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}
