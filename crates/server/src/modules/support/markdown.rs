//! Ticket messages are Markdown, kept as written and rendered here to HTML
//! that is safe to put in a page: pulldown-cmark renders (raw HTML passes
//! through it), then ammonia keeps only an allow-list of tags, attributes
//! and URL schemes, so no script, event handler or `javascript:` link
//! survives.

use pulldown_cmark::{Options, Parser};

pub fn to_safe_html(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, Parser::new_ext(markdown, options));
    ammonia::clean(&html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders() {
        let html = to_safe_html("**bold** and [a link](https://example.org)\n\n```\ncode\n```");
        assert!(html.contains("<strong>bold</strong>"), "{html}");
        assert!(html.contains(r#"href="https://example.org""#), "{html}");
        assert!(html.contains("<code>code"), "{html}");
    }

    #[test]
    fn scripts_handlers_and_javascript_links_do_not_survive() {
        let html = to_safe_html(
            "<script>alert(1)</script>\n\n[x](javascript:alert(2))\n\n\
             <img src=x onerror=alert(3)>\n\n<a href=\"javascript:alert(4)\">y</a>\n\n\
             <iframe src=\"https://evil.example\"></iframe>",
        );
        for needle in ["<script", "alert(1)", "javascript:", "onerror", "<iframe"] {
            assert!(!html.contains(needle), "{needle} in {html}");
        }
    }
}
