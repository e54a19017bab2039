//! Elements of the page, and what a wait for an element's text matches.

use std::fmt;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{ELEMENT_KEY, Endpoint, string};

/// An element of the page, valid until the page drops it (then commands on it fail with
/// `stale element reference`).
#[derive(Clone)]
pub struct Element {
    session: Endpoint,
    id: String,
}

impl fmt::Debug for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Element").field(&self.id).finish()
    }
}

impl Element {
    pub(super) fn from_json(session: &Endpoint, value: &Value) -> anyhow::Result<Element> {
        let Some(id) = value[ELEMENT_KEY].as_str() else {
            bail!("not an element reference: {value}")
        };
        Ok(Element { session: session.clone(), id: id.to_owned() })
    }

    /// The element as an argument for [`Browser::execute`].
    pub fn to_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    /// Clicks its centre, as a user would: scrolled into view, refused when something
    /// else covers it (`element click intercepted`).
    pub async fn click(&self) -> anyhow::Result<()> {
        self.session.post(&self.path("/click"), json!({})).await?;
        Ok(())
    }

    /// Types `text` into it (see [`keys`] for Enter and the like).
    pub async fn send_keys(&self, text: &str) -> anyhow::Result<()> {
        self.session.post(&self.path("/value"), json!({ "text": text })).await?;
        Ok(())
    }

    pub async fn clear(&self) -> anyhow::Result<()> {
        self.session.post(&self.path("/clear"), json!({})).await?;
        Ok(())
    }

    /// Its rendered text, as a user sees it.
    pub async fn text(&self) -> anyhow::Result<String> {
        string(self.session.get(&self.path("/text")).await?)
    }

    /// An HTML attribute as written in the page; `None` when absent.
    pub async fn attr(&self, name: &str) -> anyhow::Result<Option<String>> {
        let value = self.session.get(&self.path(&format!("/attribute/{name}"))).await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// A DOM property (`checked`, `disabled`, …).
    pub async fn prop(&self, name: &str) -> anyhow::Result<Value> {
        self.session.get(&self.path(&format!("/property/{name}"))).await
    }

    /// The current value of an input, textarea or select (what the user typed or picked,
    /// where `attr("value")` is only what the page started with).
    pub async fn value(&self) -> anyhow::Result<String> {
        Ok(self.prop("value").await?.as_str().unwrap_or_default().to_owned())
    }

    pub async fn displayed(&self) -> anyhow::Result<bool> {
        let value = self.session.get(&self.path("/displayed")).await?;
        value.as_bool().context("displayed: not a boolean")
    }

    /// Picks the option with value `value` of a `<select>` and fires `input` and `change`
    /// as a user's pick would; an error when there is no such option.
    pub async fn select_by_value(&self, value: &str) -> anyhow::Result<()> {
        const SCRIPT: &str = "const [select, value] = arguments;\
            if (!(select instanceof HTMLSelectElement)) return 'not a <select>';\
            if (!Array.from(select.options).some((o) => o.value === value)) return 'no such option';\
            select.value = value;\
            select.dispatchEvent(new Event('input', { bubbles: true }));\
            select.dispatchEvent(new Event('change', { bubbles: true }));\
            return null;";
        let args = [self.to_arg(), json!(value)];
        let answer =
            self.session.post("/execute/sync", json!({ "script": SCRIPT, "args": args })).await?;
        match answer.as_str() {
            Some(problem) => bail!("select {value:?}: {problem}"),
            None => Ok(()),
        }
    }
}

/// What [`Browser::wait_for_text`] waits for: a substring, or a predicate on the text.
pub trait TextMatch {
    fn matches(&self, text: &str) -> bool;
    /// For the timeout's error.
    fn describe(&self) -> String;
}

impl TextMatch for &str {
    fn matches(&self, text: &str) -> bool {
        text.contains(*self)
    }
    fn describe(&self) -> String {
        format!("a text containing {self:?}")
    }
}

impl TextMatch for String {
    fn matches(&self, text: &str) -> bool {
        text.contains(self.as_str())
    }
    fn describe(&self) -> String {
        format!("a text containing {self:?}")
    }
}

impl<F: Fn(&str) -> bool> TextMatch for F {
    fn matches(&self, text: &str) -> bool {
        self(text)
    }
    fn describe(&self) -> String {
        "a text the predicate accepts".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_matches_substrings_and_predicates() {
        // Called through the trait: `str` has a `matches` of its own.
        assert!(TextMatch::matches(&"ress", "pressed"));
        assert!(!TextMatch::matches(&"idle", "pressed"));
        assert!(TextMatch::matches(&"ress".to_owned(), "pressed"));
        let long = |text: &str| text.len() > 3;
        assert!(long.matches("pressed"));
        assert!(!long.matches("no"));
    }
}
