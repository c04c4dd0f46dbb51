//! The blog over real HTTP and WebSocket on the real model: posts owner-only across two users,
//! revisions and the 409 on a stale save, limits, the public pages (parsed: meta tags, JSON-LD,
//! canonical links), feeds and the sitemap as XML, caching (ETag / Last-Modified → 304), the
//! XSS payload list through the whole path, the local SEO checks against hand-computed values,
//! and every AI action streaming on the real model.

use reqwest::header::{
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common;
use crate::common::app::{ws_next, ws_send, SseReader, TestApp};
use hearth::config::Registration;

fn open_registration(c: &mut hearth::config::Config) {
    c.auth.registration = Registration::Open;
    c.auth.login_per_ip_per_minute = 100_000;
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let (s, v) = app.post_json("/api/posts", Some(token), &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

async fn patch(app: &TestApp, token: &str, id: &str, body: Value) -> (StatusCode, Value) {
    let (s, _, v) = app
        .call(
            Method::PATCH,
            &format!("/api/posts/{id}"),
            Some(token),
            Some(&body),
        )
        .await;
    (s, v)
}

async fn page(app: &TestApp, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let r = app.client.get(app.url(path)).send().await.expect("get");
    let (s, h) = (r.status(), r.headers().clone());
    (s, h, r.text().await.expect("text"))
}

#[tokio::test]
async fn posts_are_owner_only_and_a_stale_save_is_a_409_never_an_overwrite() {
    let _model = common::serial();
    let app = TestApp::spawn(open_registration);
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let post = create(
        &app,
        &alice,
        json!({"title": "Hello, World!", "body": "One\ntwo"}),
    )
    .await;
    let id = post["id"].as_str().unwrap().to_string();
    assert_eq!(post["slug"], "hello-world");
    assert_eq!(post["revision"], 1);
    assert_eq!(post["status"], "draft");
    assert_eq!(post["author"], "alice");
    assert_eq!(post["url"], "/blog/alice/hello-world");
    // The same title again gets the next free slug.
    let again = create(&app, &alice, json!({"title": "Hello world"})).await;
    assert_eq!(again["slug"], "hello-world-2");

    // Every route on alice's post is a 404 for bob, and his list is empty.
    for (method, path, body) in [
        (Method::GET, format!("/api/posts/{id}"), None),
        (
            Method::PATCH,
            format!("/api/posts/{id}"),
            Some(json!({"revision": 1, "title": "mine"})),
        ),
        (Method::DELETE, format!("/api/posts/{id}"), None),
        (Method::POST, format!("/api/posts/{id}/publish"), None),
        (Method::POST, format!("/api/posts/{id}/unpublish"), None),
        (Method::GET, format!("/api/posts/{id}/revisions"), None),
        (Method::GET, format!("/api/posts/{id}/revisions/1"), None),
        (
            Method::POST,
            format!("/api/posts/{id}/revisions/1/restore"),
            Some(json!({"revision": 1})),
        ),
        (Method::GET, format!("/api/posts/{id}/seo"), None),
        (
            Method::POST,
            format!("/api/posts/{id}/assist"),
            Some(json!({"action": "titles", "stream": false})),
        ),
    ] {
        let (s, _, v) = app
            .call(method.clone(), &path, Some(&bob), body.as_ref())
            .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {v}");
    }
    let (_, list) = app.get_json("/api/posts", Some(&bob)).await;
    assert_eq!(list["data"], json!([]));
    let (_, list) = app.get_json("/api/posts?status=draft", Some(&alice)).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert!(
        list["data"][0].get("body").is_none(),
        "lists leave bodies out"
    );
    let (s, _) = app.get_json("/api/posts", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A save names its revision; the next one from the same base is stale.
    let (s, saved) = patch(
        &app,
        &alice,
        &id,
        json!({"revision": 1, "body": "One\nthree\nfour", "tags": [" Rust ", "rust", "Web Dev"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{saved}");
    assert_eq!(saved["revision"], 2);
    assert_eq!(saved["tags"], json!(["rust", "web dev"]));
    let (s, stale) = patch(
        &app,
        &alice,
        &id,
        json!({"revision": 1, "body": "overwrite?"}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{stale}");
    assert_eq!(stale["error"]["code"], "revision_conflict");
    assert_eq!(stale["error"]["param"], "revision");
    assert_eq!(stale["current"]["revision"], 2);
    assert_eq!(stale["current"]["body"], "One\nthree\nfour");
    let (_, stored) = app
        .get_json(&format!("/api/posts/{id}"), Some(&alice))
        .await;
    assert_eq!(
        stored["body"], "One\nthree\nfour",
        "the stale save changed nothing"
    );
    let (s, v) = patch(&app, &alice, &id, json!({"body": "no revision"})).await;
    assert_eq!(
        (s, v["error"]["param"].clone()),
        (StatusCode::BAD_REQUEST, json!("revision"))
    );

    // Revisions: newest first, with a line summary; an old one restores as a new revision.
    let (_, revs) = app
        .get_json(&format!("/api/posts/{id}/revisions"), Some(&alice))
        .await;
    let revs = revs["data"].as_array().unwrap().clone();
    assert_eq!(revs.len(), 2, "{revs:?}");
    assert_eq!(
        (
            revs[0]["revision"].clone(),
            revs[0]["added"].clone(),
            revs[0]["removed"].clone()
        ),
        (json!(2), json!(2), json!(1))
    );
    let (_, r1) = app
        .get_json(&format!("/api/posts/{id}/revisions/1"), Some(&alice))
        .await;
    assert_eq!(r1["body"], "One\ntwo");
    let (s, restored) = app
        .post_json(
            &format!("/api/posts/{id}/revisions/1/restore"),
            Some(&alice),
            &json!({"revision": 1}),
        )
        .await;
    assert_eq!(
        (s, restored["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("revision_conflict"))
    );
    let (s, restored) = app
        .post_json(
            &format!("/api/posts/{id}/revisions/1/restore"),
            Some(&alice),
            &json!({"revision": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{restored}");
    assert_eq!(
        (restored["revision"].clone(), restored["body"].clone()),
        (json!(3), json!("One\ntwo"))
    );

    // Slugs and tags are validated; a slug another post has is a 409.
    let (s, v) = patch(
        &app,
        &alice,
        &id,
        json!({"revision": 3, "slug": "Not A Slug"}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["param"].clone()),
        (StatusCode::BAD_REQUEST, json!("slug"))
    );
    let (s, v) = patch(
        &app,
        &alice,
        &id,
        json!({"revision": 3, "slug": "hello-world-2"}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("slug_taken"))
    );
    let (s, v) = patch(
        &app,
        &alice,
        &id,
        json!({"revision": 3, "tags": ["<script>"]}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["param"].clone()),
        (StatusCode::BAD_REQUEST, json!("tags"))
    );
    let (s, v) = patch(&app, &alice, &id, json!({"revision": 3, "title": "  "})).await;
    assert_eq!(
        (s, v["error"]["param"].clone()),
        (StatusCode::BAD_REQUEST, json!("title"))
    );
    let (s, v) = app
        .post_json(
            "/api/posts",
            Some(&alice),
            &json!({"title": "x", "colour": "red"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Publishing keeps the revision; the first publish dates the post.
    let (s, published) = app
        .post_json(
            &format!("/api/posts/{id}/publish"),
            Some(&alice),
            &json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{published}");
    assert_eq!(
        (published["status"].clone(), published["revision"].clone()),
        (json!("published"), json!(3))
    );
    assert!(published["published_at"].as_i64().is_some());
    let (s, _, _) = app
        .call(
            Method::DELETE,
            &format!("/api/posts/{id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app
        .get_json(&format!("/api/posts/{id}"), Some(&alice))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn body_size_and_post_count_limits_come_from_config() {
    let _model = common::serial();
    let app = TestApp::spawn(|c| {
        open_registration(c);
        c.blog.max_body_bytes = 100;
        c.blog.max_posts_per_user = 2;
    });
    let ada = app.user("ada").await;
    let (s, v) = app
        .post_json(
            "/api/posts",
            Some(&ada),
            &json!({"title": "Big", "body": "x".repeat(101)}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::PAYLOAD_TOO_LARGE, json!("payload_too_large")),
        "{v}"
    );
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("blog.max_body_bytes"));
    create(&app, &ada, json!({"title": "One", "body": "x".repeat(100)})).await;
    create(&app, &ada, json!({"title": "Two"})).await;
    let (s, v) = app
        .post_json("/api/posts", Some(&ada), &json!({"title": "Three"}))
        .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, json!("post_limit")),
        "{v}"
    );
    let (s, v) = app
        .post_json(
            "/api/render",
            Some(&ada),
            &json!({"markdown": "y".repeat(101)}),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
}

fn meta(doc: &scraper::Html, attr: &str, name: &str) -> String {
    let sel = scraper::Selector::parse(&format!("meta[{attr}=\"{name}\"]")).unwrap();
    doc.select(&sel)
        .next()
        .unwrap_or_else(|| panic!("no meta {attr}={name}"))
        .value()
        .attr("content")
        .unwrap_or_default()
        .to_string()
}

fn select<'a>(doc: &'a scraper::Html, css: &str) -> Vec<scraper::ElementRef<'a>> {
    doc.select(&scraper::Selector::parse(css).unwrap())
        .collect()
}

#[tokio::test]
async fn public_pages_carry_their_meta_tags_feeds_and_sitemap_and_are_cacheable() {
    let _model = common::serial();
    let app = TestApp::spawn(|c| {
        open_registration(c);
        c.blog.page_size = 2;
    });
    let alice = app.user("alice").await;
    let body = "## Why\n\nBread is *good* & cheap.\n\n```rust\nfn main() {}\n```\n";
    let post = create(
        &app,
        &alice,
        json!({
            "title": "Baking <bread> & \"more\"", "body": body, "slug": "baking",
            "meta_description": "How to bake bread at home, step by step.",
            "keywords": ["bread", "baking"], "tags": ["food"],
        }),
    )
    .await;
    let id = post["id"].as_str().unwrap();
    // A draft is not public.
    let (s, h, _) = page(&app, "/blog/alice/baking").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(h[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    app.post_json(
        &format!("/api/posts/{id}/publish"),
        Some(&alice),
        &json!({}),
    )
    .await;

    let (s, h, html) = page(&app, "/blog/alice/baking").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(h[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let doc = scraper::Html::parse_document(&html);
    let base = format!("http://{}", app.addr);
    let canonical = format!("{base}/blog/alice/baking");
    let title = select(&doc, "title")[0].text().collect::<String>();
    assert!(title.starts_with("Baking <bread> & \"more\""), "{title}");
    assert_eq!(select(&doc, "h1").len(), 1);
    assert_eq!(
        meta(&doc, "name", "description"),
        "How to bake bread at home, step by step."
    );
    assert_eq!(meta(&doc, "name", "keywords"), "bread, baking");
    assert_eq!(
        select(&doc, "link[rel=canonical]")[0].value().attr("href"),
        Some(canonical.as_str())
    );
    assert_eq!(meta(&doc, "property", "og:type"), "article");
    assert_eq!(
        meta(&doc, "property", "og:title"),
        "Baking <bread> & \"more\""
    );
    assert_eq!(meta(&doc, "property", "og:url"), canonical);
    assert_eq!(
        meta(&doc, "property", "og:description"),
        "How to bake bread at home, step by step."
    );
    assert_eq!(meta(&doc, "property", "article:tag"), "food");
    assert_eq!(meta(&doc, "name", "twitter:card"), "summary");
    assert_eq!(
        meta(&doc, "name", "twitter:title"),
        "Baking <bread> & \"more\""
    );
    let ld = select(&doc, "script[type=\"application/ld+json\"]");
    assert_eq!(ld.len(), 1);
    assert_eq!(
        select(&doc, "script").len(),
        1,
        "no script but the JSON-LD data block"
    );
    let ld: Value =
        serde_json::from_str(&ld[0].text().collect::<String>()).expect("JSON-LD parses");
    assert_eq!(ld["@type"], "BlogPosting");
    assert_eq!(ld["headline"], "Baking <bread> & \"more\"");
    assert_eq!(ld["author"]["name"], "alice");
    assert_eq!(ld["mainEntityOfPage"]["@id"], canonical);
    assert!(ld["datePublished"].as_str().unwrap().contains('T'));
    // The body rendered: the heading, and code highlighted with classes, no inline style.
    assert!(!select(&doc, "article h2").is_empty(), "{html}");
    assert!(html.contains("hl-"), "{html}");
    assert!(!html.contains("style="), "{html}");

    // Cacheable: the ETag or the Last-Modified date gets a 304 without a body.
    let etag = h[ETAG].clone();
    let r = app
        .client
        .get(app.url("/blog/alice/baking"))
        .header(IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = app
        .client
        .get(app.url("/blog/alice/baking"))
        .header(IF_MODIFIED_SINCE, h[LAST_MODIFIED].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    // An edit changes the ETag.
    let (s, _) = patch(
        &app,
        &alice,
        id,
        json!({"revision": 1, "body": format!("{body}\nMore.")}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let r = app
        .client
        .get(app.url("/blog/alice/baking"))
        .header(IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Lists paginate (page_size = 2): three posts, two pages, a third page is 404.
    for t in ["Second post", "Third post"] {
        let p = create(&app, &alice, json!({"title": t, "body": "Text."})).await;
        app.post_json(
            &format!("/api/posts/{}/publish", p["id"].as_str().unwrap()),
            Some(&alice),
            &json!({}),
        )
        .await;
    }
    create(&app, &alice, json!({"title": "Secret draft"})).await;
    let (s, _, list) = page(&app, "/blog").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        list.contains("Third post") && list.contains("Second post") && !list.contains("Baking"),
        "{list}"
    );
    assert!(!list.contains("Secret draft"));
    let doc = scraper::Html::parse_document(&list);
    assert_eq!(
        select(&doc, "link[rel=next]")[0].value().attr("href"),
        Some(format!("{base}/blog?page=2").as_str())
    );
    let (s, _, page2) = page(&app, "/blog?page=2").await;
    assert_eq!(s, StatusCode::OK);
    assert!(page2.contains("Baking"), "{page2}");
    assert_eq!(page(&app, "/blog?page=3").await.0, StatusCode::NOT_FOUND);
    assert_eq!(page(&app, "/blog?page=x").await.0, StatusCode::NOT_FOUND);
    let (s, _, own) = page(&app, "/blog/alice").await;
    assert_eq!(s, StatusCode::OK);
    assert!(own.contains("Third post"));
    assert_eq!(page(&app, "/blog/nobody").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        page(&app, "/blog/alice/no-such-post").await.0,
        StatusCode::NOT_FOUND
    );

    // Feeds and the sitemap are well-formed XML listing the published posts only.
    for path in ["/blog/feed.xml", "/blog/alice/feed.xml"] {
        let (s, h, xml) = page(&app, path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(h[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/atom+xml"));
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{path}: {e}\n{xml}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "feed");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2005/Atom")
        );
        let entries: Vec<_> = root
            .children()
            .filter(|n| n.has_tag_name("entry"))
            .collect();
        assert_eq!(entries.len(), 3, "{xml}");
        assert!(xml.contains("Baking &lt;bread&gt; &amp;"), "{xml}");
    }
    assert_eq!(
        page(&app, "/blog/nobody/feed.xml").await.0,
        StatusCode::NOT_FOUND
    );
    let (s, _, xml) = page(&app, "/sitemap.xml").await;
    assert_eq!(s, StatusCode::OK);
    let doc = roxmltree::Document::parse(&xml).expect("sitemap parses");
    let locs: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("loc"))
        .filter_map(|n| n.text().map(str::to_string))
        .collect();
    assert!(locs.contains(&canonical), "{locs:?}");
    assert_eq!(locs.len(), 4, "the list page and three posts: {locs:?}");
    let (s, _, robots) = page(&app, "/robots.txt").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        robots.contains(&format!("Sitemap: {base}/sitemap.xml")),
        "{robots}"
    );
    let (s, h, css) = page(&app, "/blog/style.css").await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[CONTENT_TYPE].to_str().unwrap().starts_with("text/css") && css.contains(".hl-"));

    // Unpublished: gone from the page, the lists and the feed.
    app.post_json(
        &format!("/api/posts/{id}/unpublish"),
        Some(&alice),
        &json!({}),
    )
    .await;
    assert_eq!(
        page(&app, "/blog/alice/baking").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, _, xml) = page(&app, "/blog/feed.xml").await;
    assert!(!xml.contains("Baking"));
}

/// No element, attribute or URL that runs script survives in `html`.
fn assert_inert(html: &str, context: &str) {
    let doc = scraper::Html::parse_document(html);
    for el in doc
        .root_element()
        .descendants()
        .filter_map(scraper::ElementRef::wrap)
    {
        let name = el.value().name();
        if name == "script" {
            assert_eq!(
                el.value().attr("type"),
                Some("application/ld+json"),
                "{context}: a script survived"
            );
        }
        assert!(
            !matches!(
                name,
                "iframe"
                    | "object"
                    | "embed"
                    | "form"
                    | "base"
                    | "svg"
                    | "math"
                    | "frame"
                    | "frameset"
                    | "applet"
            ),
            "{context}: <{name}> survived"
        );
        if name == "meta" {
            assert!(
                el.value().attr("http-equiv").is_none(),
                "{context}: meta http-equiv survived"
            );
        }
        for (attr, value) in el.value().attrs() {
            assert!(
                !attr.to_lowercase().starts_with("on"),
                "{context}: {attr} survived on <{name}>"
            );
            assert!(
                attr != "style" || name == "html",
                "{context}: a style attribute survived"
            );
            let v: String = value
                .chars()
                .filter(|c| !c.is_whitespace() && !c.is_control())
                .collect::<String>()
                .to_lowercase();
            for scheme in ["javascript:", "vbscript:", "data:text", "livescript:"] {
                assert!(!v.starts_with(scheme), "{context}: {attr}={value} survived");
            }
        }
    }
}

#[tokio::test]
async fn no_xss_payload_survives_the_preview_or_the_public_page() {
    let _model = common::serial();
    let app = TestApp::spawn(open_registration);
    let ada = app.user("ada").await;
    let payloads: Vec<&str> = include_str!("../fixtures/xss-payloads.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        payloads.len() >= 80,
        "the list has {} payloads",
        payloads.len()
    );
    let body = payloads
        .iter()
        .map(|p| format!("{p}\n\n- {p}\n\n| a |\n|---|\n| {p} |\n\n"))
        .collect::<String>();
    for p in &payloads {
        let (s, v) = app
            .post_json("/api/render", Some(&ada), &json!({"markdown": p}))
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_inert(
            &format!("<html><body>{}</body></html>", v["html"].as_str().unwrap()),
            p,
        );
    }
    let post = create(&app, &ada, json!({"title": "<script>alert(1)</script>", "body": body, "slug": "xss",
        "meta_description": "\"><script>alert(1)</script>", "tags": ["xss"], "cover_alt": "\" onerror=\"alert(1)"})).await;
    app.post_json(
        &format!("/api/posts/{}/publish", post["id"].as_str().unwrap()),
        Some(&ada),
        &json!({}),
    )
    .await;
    let (s, _, html) = page(&app, "/blog/ada/xss").await;
    assert_eq!(s, StatusCode::OK);
    assert_inert(&html, "the public page");
    let (_, _, list) = page(&app, "/blog").await;
    assert_inert(&list, "the list page");
    let (_, _, feed) = page(&app, "/blog/feed.xml").await;
    roxmltree::Document::parse(&feed).expect("the feed stays well-formed");
}

#[tokio::test]
async fn seo_checks_match_values_computed_by_hand() {
    let _model = common::serial();
    let app = TestApp::spawn(open_registration);
    let ada = app.user("ada").await;
    // By hand: words Intro | The cat sat on the mat | It was happy | Deep = 11; sentences:
    // the two headings and two in the paragraph = 4; syllables: in-tro 2, happy 2 (a, y),
    // deep 1, the other seven words 1 each = 13. Flesch = 206.835 − 1.015 × 11/4 − 84.6 ×
    // 13/11 = 206.835 − 2.79125 − 99.98182 = 104.06 → 104.1.
    let body = "## Intro\n\nThe cat sat on the mat. It was happy.\n\n#### Deep\n\n![](cat.png)\n";
    let post = create(&app, &ada, json!({"title": "Cats", "body": body})).await;
    create(&app, &ada, json!({"title": "cats "})).await;
    assert_eq!(post["words"], 11);
    let (s, seo) = app
        .get_json(
            &format!("/api/posts/{}/seo", post["id"].as_str().unwrap()),
            Some(&ada),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{seo}");
    assert_eq!(seo["word_count"], 11, "{seo}");
    assert_eq!(seo["sentence_count"], 4, "{seo}");
    assert_eq!(seo["syllable_count"], 13, "{seo}");
    assert_eq!(seo["flesch_reading_ease"], 104.1, "{seo}");
    assert_eq!(seo["reading_time_minutes"], 1);
    assert_eq!(
        seo["title"],
        json!({"length": 4, "min": 30, "max": 60, "ok": false})
    );
    assert_eq!(seo["meta_description"]["length"], 0);
    assert_eq!(
        seo["headings"],
        json!([{"level": 2, "text": "Intro"}, {"level": 4, "text": "Deep"}])
    );
    assert_eq!(seo["heading_issues"].as_array().unwrap().len(), 1, "{seo}");
    assert_eq!(seo["images_without_alt"], json!(["cat.png"]));
    assert_eq!(seo["duplicate_title"], true);
    let checks = seo["checks"].as_array().unwrap();
    let ok = |id: &str| {
        checks
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("{id}"))["ok"]
            .clone()
    };
    assert_eq!(ok("readability"), json!(true));
    assert_eq!(ok("word_count"), json!(false));
    assert_eq!(ok("image_alt"), json!(false));
    assert_eq!(ok("duplicate_title"), json!(false));
}

const BODY: &str =
    "Sourdough bread needs only flour, water and salt. The starter does the rest.\n\n\
                    - feed the starter\n- mix the dough\n- bake hot\n";

/// Every action streamed over SSE on the real model: tokens as they come, then the checked
/// result; the post itself never changes.
#[tokio::test]
async fn every_ai_action_streams_on_the_real_model_and_leaves_the_post_alone() {
    let _model = common::serial();
    let app = TestApp::spawn(open_registration);
    let ada = app.user("ada").await;
    let post = create(
        &app,
        &ada,
        json!({"title": "Baking sourdough bread at home", "body": BODY}),
    )
    .await;
    let id = post["id"].as_str().unwrap();
    let path = format!("/api/posts/{id}/assist");
    for (action, selection, options) in [
        ("titles", None, json!({"count": 3})),
        ("outline", None, json!({"topic": "sourdough bread"})),
        ("continue", None, json!({"cursor": 50})),
        (
            "expand",
            Some("- feed the starter\n- mix the dough"),
            json!({}),
        ),
        (
            "rewrite",
            Some("The starter does the rest."),
            json!({"style": "formal"}),
        ),
        ("summary", None, json!({"words": 12})),
        ("meta_description", None, json!({})),
        ("keywords", None, json!({"count": 4})),
        ("slug", None, json!({})),
    ] {
        // Greedy, so the run is the same every time: at the default temperature a 135M model
        // now and then answers a JSON action with an empty list.
        let mut options = options;
        options["max_tokens"] = json!(40);
        options["temperature"] = json!(0.0);
        let req = json!({"action": action, "selection": selection, "options": options});
        let r = app
            .open_sse(Method::POST, &path, Some(&ada), Some(&req))
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{action}");
        assert!(r.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let mut sse = SseReader::new(r);
        let mut tokens = 0;
        let mut last = Value::Null;
        while let Some(frame) = sse.next().await {
            match frame["type"].as_str() {
                Some("token") => {
                    assert!(last.is_null(), "{action}: a token after the end");
                    tokens += 1;
                }
                _ => last = frame,
            }
        }
        assert!(tokens >= 2, "{action}: {tokens} token frames");
        assert_eq!(last["type"], "done", "{action}: {last}");
        assert_eq!(last["action"], action);
        let text = last["text"].as_str().unwrap();
        assert!(!text.trim().is_empty(), "{action}: {last}");
        assert!(
            last["usage"]["completion_tokens"].as_u64().unwrap() >= 2,
            "{last}"
        );
        match action {
            "titles" => {
                let titles = last["titles"].as_array().expect("titles");
                assert!((1..=3).contains(&titles.len()), "{last}");
            }
            "keywords" => assert!(
                (1..=4).contains(&last["keywords"].as_array().expect("keywords").len()),
                "{last}"
            ),
            "summary" => assert!(text.split_whitespace().count() <= 12, "{text}"),
            "meta_description" => assert!(text.chars().count() <= 160, "{text}"),
            "slug" => assert!(
                text.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{text}"
            ),
            _ => {}
        }
    }
    // Not streamed: the same result as JSON.
    let (s, v) = app
        .post_json(
            &path,
            Some(&ada),
            &json!({"action": "meta_description", "stream": false, "options": {"max_tokens": 40}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["text"].as_str().unwrap().chars().count() <= 160);
    // Bad requests are 400s naming the field.
    for (req, param) in [
        (json!({"action": "poem"}), "action"),
        (
            json!({"action": "rewrite", "options": {"style": "formal"}}),
            "selection",
        ),
        (
            json!({"action": "rewrite", "selection": "x", "options": {"style": "pirate"}}),
            "options.style",
        ),
        (
            json!({"action": "titles", "options": {"count": 50}}),
            "options.count",
        ),
        (
            json!({"action": "continue", "options": {"cursor": 100000}}),
            "options.cursor",
        ),
        (
            json!({"action": "titles", "options": {"max_tokens": 0}}),
            "options.max_tokens",
        ),
    ] {
        let (s, v) = app.post_json(&path, Some(&ada), &req).await;
        assert_eq!(
            (s, v["error"]["param"].as_str()),
            (StatusCode::BAD_REQUEST, Some(param)),
            "{req}: {v}"
        );
    }
    let (_, after) = app.get_json(&format!("/api/posts/{id}"), Some(&ada)).await;
    assert_eq!(
        (after["revision"].clone(), after["body"].clone()),
        (json!(1), json!(BODY)),
        "assists never save"
    );
}

/// The same tools over `/ws`, with the generation service's limits applying unchanged.
#[tokio::test]
async fn ai_actions_stream_over_the_socket_can_be_cancelled_and_count_against_the_rate_limit() {
    let _model = common::serial();
    let app = TestApp::spawn(|c| {
        open_registration(c);
        c.limits.requests_per_minute = 3;
    });
    let ada = app.user("ada").await;
    let post = create(
        &app,
        &ada,
        json!({"title": "Baking sourdough bread at home", "body": BODY}),
    )
    .await;
    let id = post["id"].as_str().unwrap();
    let mut ws = app.ws(Some(&ada)).await;
    ws_send(&mut ws, json!({"type": "generate", "id": "t1", "post_id": id, "action": "titles", "options": {"count": 2, "max_tokens": 60}})).await;
    let mut states = Vec::new();
    let mut tokens = 0;
    let done = loop {
        let f = ws_next(&mut ws).await;
        assert_eq!(f["id"], "t1", "{f}");
        match f["type"].as_str().unwrap() {
            "status" => states.push(f["state"].as_str().unwrap().to_string()),
            "token" => tokens += 1,
            _ => break f,
        }
    };
    assert_eq!(states, ["queued", "thinking"]);
    assert!(tokens >= 2);
    assert_eq!(done["type"], "done", "{done}");
    assert!(!done["titles"].as_array().unwrap().is_empty(), "{done}");

    // A cancel ends a long one with `cancelled`.
    ws_send(&mut ws, json!({"type": "generate", "id": "c1", "post_id": id, "action": "continue", "options": {"max_tokens": 300}})).await;
    loop {
        let f = ws_next(&mut ws).await;
        if f["type"] == "token" {
            break;
        }
    }
    ws_send(&mut ws, json!({"type": "cancel", "id": "c1"})).await;
    let last = loop {
        let f = ws_next(&mut ws).await;
        if f["type"] == "done" || f["type"] == "error" {
            break f;
        }
    };
    assert_eq!(last["finish_reason"], "cancelled", "{last}");
    // Someone else's post is a 404 frame; the third request of the minute was the cancelled
    // one, so the fourth is refused by the rate limit.
    let bob = app.user("bob").await;
    let mut bob_ws = app.ws(Some(&bob)).await;
    ws_send(
        &mut bob_ws,
        json!({"type": "generate", "id": "x", "post_id": id, "action": "titles"}),
    )
    .await;
    let f = ws_next(&mut bob_ws).await;
    assert_eq!(
        (f["type"].clone(), f["status"].clone()),
        (json!("error"), json!(404)),
        "{f}"
    );
    let (s, v) = app
        .post_json(
            &format!("/api/posts/{id}/assist"),
            Some(&ada),
            &json!({"action": "slug", "stream": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = app
        .post_json(
            &format!("/api/posts/{id}/assist"),
            Some(&ada),
            &json!({"action": "slug", "stream": false}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (StatusCode::TOO_MANY_REQUESTS, json!("rate_limited")),
        "{v}"
    );
}
