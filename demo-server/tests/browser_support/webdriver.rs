//! A W3C WebDriver client: plain JSON over hyper to chromedriver (no
//! WebDriver crate), with the screenshot decoding it needs.

use crate::*;

/// One WebDriver session: W3C commands as JSON over HTTP.
pub(crate) struct WebDriver {
    pub(crate) http: HttpClient,
    pub(crate) session_url: String,
    pub(crate) deleted: bool,
}

impl WebDriver {
    pub(crate) async fn new_session(
        http: HttpClient,
        driver: &Driver,
        chromium: &Path,
    ) -> Result<WebDriver, String> {
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--disable-quic",
                            "--no-first-run",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            format!("--user-data-dir={}", driver.profile.path().display()),
                            "--window-size=1280,1600",
                        ],
                    },
                },
            },
        });
        let url = format!("{}/session", driver.base);
        let value = webdriver_call(&http, Method::POST, &url, Some(&caps)).await?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no sessionId in {value}"))?;
        let wd = WebDriver {
            http,
            session_url: format!("{url}/{id}"),
            deleted: false,
        };
        wd.cmd(
            Method::POST,
            "/timeouts",
            Some(json!({"pageLoad": 30_000, "script": 10_000, "implicit": 0})),
        )
        .await?;
        Ok(wd)
    }

    pub(crate) async fn cmd(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.session_url);
        webdriver_call(&self.http, method, &url, body.as_ref()).await
    }

    pub(crate) async fn goto(&self, url: &str) -> Result<(), String> {
        self.cmd(Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    pub(crate) async fn exec(&self, script: &str, args: Value) -> Result<Value, String> {
        self.cmd(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs `script` until it returns something other than null or false;
    /// script errors while waiting count as "not yet".
    pub(crate) async fn wait_js(
        &self,
        what: &str,
        script: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.exec(script, args.clone()).await {
                Ok(Value::Null | Value::Bool(false)) => "not yet".to_string(),
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            ensure!(
                Instant::now() < deadline,
                "waited {timeout:?} for {what} (last: {last})"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub(crate) async fn wait_visible(&self, css: &str, timeout: Duration) -> Result<(), String> {
        self.wait_js(
            &format!("{css} to be visible"),
            "const e = document.querySelector(arguments[0]);\
             return e && e.getClientRects().length > 0 ? true : null;",
            json!([css]),
            timeout,
        )
        .await
        .map(drop)
    }

    /// The element's WebDriver reference.
    pub(crate) async fn find(&self, css: &str) -> Result<String, String> {
        let v = self
            .cmd(
                Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        v[ELEMENT_KEY]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no element reference for {css} in {v}"))
    }

    /// Clicks like a user (the element must be visible and on top),
    /// retrying while the page is still settling.
    pub(crate) async fn click(&self, css: &str) -> Result<(), String> {
        self.wait_visible(css, UI_TIMEOUT).await?;
        let deadline = Instant::now() + UI_TIMEOUT;
        loop {
            let result = match self.find(css).await {
                Ok(id) => self
                    .cmd(
                        Method::POST,
                        &format!("/element/{id}/click"),
                        Some(json!({})),
                    )
                    .await
                    .map(drop),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("cannot click {css}: {e}"))
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Picks an option of a `<select>` by clicking it, as a user does.
    pub(crate) async fn select(&self, select_css: &str, value: &str) -> Result<(), String> {
        self.wait_visible(select_css, UI_TIMEOUT).await?;
        let id = self
            .find(&format!("{select_css} option[value=\"{value}\"]"))
            .await?;
        self.cmd(
            Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// Clears a field and types into it key by key.
    pub(crate) async fn type_into(&self, css: &str, text: &str) -> Result<(), String> {
        self.wait_visible(css, UI_TIMEOUT).await?;
        let id = self.find(css).await?;
        self.cmd(
            Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await?;
        self.cmd(
            Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await
        .map(drop)
    }

    /// The rendered text of an element (empty when it is hidden).
    pub(crate) async fn text(&self, css: &str) -> Result<String, String> {
        let id = self.find(css).await?;
        let v = self
            .cmd(Method::GET, &format!("/element/{id}/text"), None)
            .await?;
        Ok(v.as_str().unwrap_or_default().trim().to_string())
    }

    pub(crate) async fn attribute(&self, css: &str, name: &str) -> Result<String, String> {
        let id = self.find(css).await?;
        let v = self
            .cmd(
                Method::GET,
                &format!("/element/{id}/attribute/{name}"),
                None,
            )
            .await?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{css} has no attribute {name}"))
    }

    /// The current value of a form field.
    pub(crate) async fn js_value(&self, css: &str) -> Result<String, String> {
        let v = self
            .exec(
                "const e = document.querySelector(arguments[0]); return e ? e.value : null;",
                json!([css]),
            )
            .await?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no field {css}"))
    }

    pub(crate) async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let v = self.cmd(Method::GET, "/screenshot", None).await?;
        let png = base64_decode(v.as_str().unwrap_or_default())?;
        ensure!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the screenshot is not a PNG"
        );
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub(crate) async fn source(&self) -> Result<String, String> {
        let v = self.cmd(Method::GET, "/source", None).await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    pub(crate) async fn delete(&mut self) -> Result<(), String> {
        if self.deleted {
            return Ok(());
        }
        self.deleted = true;
        self.cmd(Method::DELETE, "", None).await.map(drop)
    }
}

/// One WebDriver command: its `value`, or an error naming the command and
/// WebDriver's error code and message.
pub(crate) async fn webdriver_call(
    http: &HttpClient,
    method: Method,
    url: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let (status, reply) = http_json(http, method.clone(), url, body).await?;
    let value = reply.get("value").cloned().unwrap_or(Value::Null);
    if !status.is_success() || value.get("error").is_some() {
        return Err(format!(
            "{method} {url}: {status} {}: {}",
            value["error"].as_str().unwrap_or("?"),
            value["message"]
                .as_str()
                .unwrap_or_default()
                .lines()
                .next()
                .unwrap_or_default()
        ));
    }
    Ok(value)
}

/// One HTTP request with an optional JSON body; the reply parsed as JSON
/// (`Value::String` of the text when it is not JSON).
pub(crate) async fn http_json(
    http: &HttpClient,
    method: Method,
    url: &str,
    body: Option<&Value>,
) -> Result<(StatusCode, Value), String> {
    let mut req = Request::builder().method(method.clone()).uri(url);
    let bytes = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(b).map_err(|e| e.to_string())?)
        }
        None => Bytes::new(),
    };
    let req = req.body(Full::new(bytes)).map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = http.request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        Ok::<_, String>((status, value))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{method} {url}: no answer in {REQUEST_TIMEOUT:?}"))?
}

/// Standard base64 (WebDriver screenshots), padding optional.
pub(crate) fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("not base64: byte {c:#04x}")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}
