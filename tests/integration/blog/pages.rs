//! The blog's public pages, feeds, sitemap and caching; the XSS list through the preview and
//! the public page; the SEO checks against values computed by hand.

use reqwest::header::{
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{create, open_registration, patch};
use crate::common;
use crate::common::app::TestApp;

async fn page(app: &TestApp, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let r = app.client.get(app.url(path)).send().await.expect("get");
    let (s, h) = (r.status(), r.headers().clone());
    (s, h, r.text().await.expect("text"))
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
    let payloads: Vec<&str> = include_str!("../../fixtures/xss-payloads.txt")
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
