//! The browser page (SPEC §9) end to end in a real Chromium: the app on loopback with mock-llm
//! and the demo MCP server, the page loaded from it, and the page driven by keyboard and mouse.
//! Skipped (with a SKIPPED line) when Chromium is not installed, except in CI.

mod support;

use serde_json::{Value, json};
use support::browser::proxy::CuttingProxy;
use support::browser::{Browser, ENTER, ESCAPE, RELEASE_MODIFIERS, SHIFT, poll};
use support::notes::{NotesDemo, annotations_policy};
use support::*;

const LAST_REQUEST: &str = "[...document.querySelectorAll('.request')].at(-1)";
/// The text of the last request's answer, as shown.
const LAST_ANSWER: &str = "[...document.querySelectorAll('.request')].at(-1).querySelector('.answer').innerText";
const LAST_FOOTER: &str = "[...document.querySelectorAll('.request')].at(-1).querySelector('.footer').textContent";
const LAST_STATUS: &str = "[...document.querySelectorAll('.request')].at(-1)?.dataset.status";

/// A browser with the page open on a new app; `None` when Chromium is missing (outside CI).
async fn page_on_new_app(test: &str, options: Options) -> Option<(Browser, TestApp)> {
    let browser = Browser::start(test).await?;
    let app = TestApp::start(options).await;
    browser.open_page(app.addr).await;
    Some((browser, app))
}

/// Sends a message and waits until its request has ended with `status`.
async fn ask(browser: &Browser, text: &str, status: &str) {
    browser.send_message(text).await;
    browser.wait_js(&format!("{text:?} ends {status}"), &format!("{LAST_STATUS} === '{status}'")).await;
}

/// `n` distinct words, so that a missing or repeated one shows.
fn numbered_words(prefix: &str, n: usize) -> String {
    (1..=n).map(|i| format!("{prefix}{i:02}")).collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn what_is_two_plus_three_shows_the_tool_card_then_the_streamed_answer() {
    let Some((browser, app)) =
        page_on_new_app("what_is_two_plus_three_shows_the_tool_card_then_the_streamed_answer", Options::default())
            .await
    else {
        return;
    };

    // Shift+Enter is a new line, not a send.
    browser.type_message(&format!("first line{SHIFT}{ENTER}{RELEASE_MODIFIERS}second line")).await;
    assert_eq!(browser.js("document.getElementById('input').value").await, "first line\nsecond line");
    assert_eq!(browser.js("document.querySelectorAll('.request').length").await, 0, "nothing was sent");
    browser.js("document.getElementById('input').value = ''").await;

    ask(&browser, "what is 2+3", "complete").await;
    let card = "document.querySelector('.tool[data-tool=\"demo__sum\"]')";
    let arguments: Value = serde_json::from_str(
        browser.js(&format!("{card}.querySelector('.tool-arguments').textContent")).await.as_str().expect("text"),
    )
    .expect("the card shows the arguments as JSON");
    assert_eq!(arguments, json!({"a": 2, "b": 3}));
    assert_eq!(browser.js(&format!("{card}.querySelector('.tool-output').textContent")).await, "5");
    assert_eq!(browser.js(&format!("{card}.dataset.ok")).await, "true");
    let answer = browser.js("document.querySelector('.request .markdown').innerText").await;
    assert!(answer.as_str().expect("answer").contains("2 + 3 = 5"), "answer: {answer}");
    // The card comes before the answer text, in the order they streamed.
    let order = browser.js("[...document.querySelector('.answer').children].map(child => child.className)").await;
    assert_eq!(order, json!(["tool", "markdown"]));
    assert_eq!(browser.js("document.getElementById('input').value").await, "", "the field is emptied");
    assert_eq!(browser.js("document.getElementById('input') === document.activeElement").await, true);

    let wide = browser.screenshot("page-1280x800", 1280, 800).await;
    let phone = browser.screenshot("page-375x700", 375, 700).await;
    assert!(std::fs::metadata(&wide).expect("wide screenshot").len() > 0);
    assert!(std::fs::metadata(&phone).expect("phone screenshot").len() > 0);
    // At 375 px nothing is wider than the screen, and the composer is on it.
    let overflow = browser.js("document.documentElement.scrollWidth").await;
    assert!(overflow.as_u64().expect("width") <= 375, "page is {overflow} px wide at 375 px");
    let send = browser.js("document.getElementById('send').getBoundingClientRect().right").await;
    assert!(send.as_f64().expect("position") <= 375.0, "Send button at {send}");
    // On a phone the conversation list opens over the transcript.
    browser.click("#toggle-sidebar").await;
    browser.screenshot("page-375x700-conversations", 375, 700).await;
    let new_button = browser.js("document.getElementById('new-conversation').getBoundingClientRect().left").await;
    assert!(new_button.as_f64().expect("position") >= 0.0, "the list is on screen: {new_button}");
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_tools_progress_shows_on_its_card_and_a_failure_in_words() {
    let script = json!([
        {"tool_calls": [{"name": "demo__slow_count", "arguments": {"n": 5, "delay_ms": 300}}]},
        {"text": "Counted."},
        {"error": {"status": 500, "message": "the model is out of order"}, "repeat": true},
    ]);
    let Some((browser, app)) = page_on_new_app(
        "a_tools_progress_shows_on_its_card_and_a_failure_in_words",
        Options { script: Some(script), ..Options::default() },
    )
    .await
    else {
        return;
    };
    browser.send_message("count for me").await;
    let bar = "document.querySelector('.tool[data-tool=\"demo__slow_count\"] progress')";
    let progress = browser.wait_js("the progress bar moves", &format!("{bar} && !{bar}.hidden && {bar}.value")).await;
    assert!((1.0..5.0).contains(&progress.as_f64().expect("value")), "progress {progress} of 5 while it runs");
    assert_eq!(browser.js(&format!("{bar}.max")).await, 5);
    let said = browser.js("document.querySelector('.progress-text').textContent").await;
    assert!(said.as_str().expect("text").starts_with("counted to "), "the tool's message: {said}");
    browser.wait_js("the request completes", &format!("{LAST_STATUS} === 'complete'")).await;
    assert_eq!(browser.js(&format!("{bar}.hidden")).await, true, "no bar once the result is in");
    assert_eq!(browser.js("document.querySelector('.tool-output').textContent").await, "counted to 5");

    ask(&browser, "and again", "error").await;
    let footer = browser.js(LAST_FOOTER).await;
    let footer = footer.as_str().expect("footer");
    assert!(footer.contains("the model is out of order") && footer.contains("502"), "in words: {footer}");
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn html_in_model_and_tool_output_is_shown_as_text_and_never_runs() {
    let hostile = r#"<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script>"#;
    let answer = format!("{hostile} [click me](javascript:window.__pwned=3) and [the docs](https://example.com/docs)");
    let script = json!([
        {"tool_calls": [{"name": "demo__echo", "arguments": {"text": answer}}]},
        {"text": answer},
    ]);
    let Some((browser, app)) = page_on_new_app(
        "html_in_model_and_tool_output_is_shown_as_text_and_never_runs",
        Options { script: Some(script), ..Options::default() },
    )
    .await
    else {
        return;
    };
    ask(&browser, "show me something nasty", "complete").await;

    let tool_output = browser.js("document.querySelector('.tool-output').textContent").await;
    assert_eq!(tool_output, answer.as_str(), "the tool's output is shown verbatim, as text");
    let shown = browser.js("document.querySelector('.markdown').innerText").await;
    assert!(shown.as_str().expect("text").contains(hostile), "the model's HTML is shown as text: {shown}");
    let transcript = "document.getElementById('transcripts')";
    assert_eq!(browser.js(&format!("{transcript}.querySelectorAll('img, script, iframe').length")).await, 0);
    let links = browser
        .js(&format!(
            "[...{transcript}.querySelectorAll('a')].map(a => [a.textContent, a.getAttribute('href'), a.target, a.rel])"
        ))
        .await;
    assert_eq!(
        links,
        json!([["click me", null, "", ""], ["the docs", "https://example.com/docs", "_blank", "noopener noreferrer"]]),
        "the javascript: link lost its href; other links open in a new tab without an opener"
    );
    browser.click("#transcripts .markdown a:not([href])").await;
    assert_eq!(browser.js("typeof window.__pwned").await, "undefined");
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn approval_and_elicitation_dialogs_send_the_answers() {
    let Some((browser, app)) =
        page_on_new_app("approval_and_elicitation_dialogs_send_the_answers", Options::default()).await
    else {
        return;
    };
    // The page's own request view is given the chunks, and what its dialogs would send is
    // recorded; the next test answers the real server's questions.
    let shown = browser
        .client
        .execute_async(
            r#"const done = arguments[0];
            const url = document.querySelector('script[type=module]').src.replace(/app\.js$/, 'transcript.js');
            import(url).then(({ RequestView }) => {
              window.__sent = [];
              const view = new RequestView('r-q', 'delete my note', (frame) => window.__sent.push(frame));
              window.__view = view;
              document.querySelector('#transcripts .transcript').append(view.root);
              view.apply({ status: 'processing', seq: 0 });
              view.applyChunk({ type: 'approval_request', data: { id: 'call_1', name: 'demo__delete_note', server: 'demo',
                arguments: { note: 'n-1' }, timeout_seconds: 300 } });
              view.applyChunk({ type: 'elicitation', data: { id: 'e-1', server: 'demo', mode: 'form', message: 'Who are you?',
                requested_schema: { type: 'object', required: ['name'], properties: {
                  name: { type: 'string', title: 'Name' }, age: { type: 'integer' }, admin: { type: 'boolean' } } } } });
              done(true);
            }, (error) => done(String(error)));"#,
            vec![],
        )
        .await
        .expect("script runs");
    assert_eq!(shown, true, "the dialogs rendered: {shown}");
    browser.click(".question[data-question-id='call_1'] button").await;
    browser.click(".question[data-question-id='e-1'] input[type='text']").await;
    browser.client.active_element().await.expect("focus").send_keys("Ada").await.expect("type");
    browser.click(".question[data-question-id='e-1'] .buttons button").await;
    assert_eq!(
        browser.js("window.__sent").await,
        json!([
            {"action": "approve", "request_id": "r-q", "payload": {"call_id": "call_1", "decision": "allow"}},
            {"action": "elicit", "request_id": "r-q",
             "payload": {"elicitation_id": "e-1", "action": "accept", "content": {"name": "Ada", "admin": false}}},
        ])
    );
    let open_buttons = browser.js("document.querySelectorAll('.question button:not(:disabled)').length").await;
    assert_eq!(open_buttons, 0, "answered dialogs take no second answer");
    browser
        .js("window.__view.applyChunk({type: 'approval', data: {id: 'call_1', decision: 'allow', by: 'anonymous'}})")
        .await;
    let state = browser
        .js("document.querySelector(\".question[data-question-id='call_1'] .question-state\").textContent")
        .await;
    assert_eq!(state, "allow by anonymous");
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_dialogs_answer_the_servers_real_questions() {
    let demo = NotesDemo::new();
    let script = json!([
        {"tool_calls": [
            {"id": "call_del", "name": "demo__delete_note", "arguments": {"note": "buy milk"}},
            {"id": "call_ask", "name": "demo__ask_name", "arguments": {}}
        ]},
        {"text": "All done."}
    ]);
    let options = demo.options(script, annotations_policy);
    let Some((browser, app)) = page_on_new_app("the_dialogs_answer_the_servers_real_questions", options).await else {
        return;
    };
    browser.send_message("tidy my notes and greet me").await;
    let approval = ".question[data-question-id='call_del']";
    browser.wait_js("the approval dialog", &format!("document.querySelector(\"{approval}\") !== null")).await;
    let question = browser.js(&format!("document.querySelector(\"{approval} h3\").textContent")).await;
    assert_eq!(question, "Allow demo__delete_note (server demo)?");
    browser.click(&format!("{approval} button")).await;

    let form = ".question[data-question-id='e-1']";
    browser.wait_js("the elicitation dialog", &format!("document.querySelector(\"{form}\") !== null")).await;
    browser.click(&format!("{form} input[type='text']")).await;
    browser.client.active_element().await.expect("focus").send_keys("Ada").await.expect("type");
    browser.click(&format!("{form} .buttons button")).await;
    browser.wait_js("the answer completes", &format!("{LAST_STATUS} === 'complete'")).await;

    let greeting = "document.querySelector('.tool[data-tool=\"demo__ask_name\"] .tool-output').textContent";
    assert_eq!(browser.js(greeting).await, "Hello, Ada!");
    let state = browser.js(&format!("document.querySelector(\"{approval} .question-state\").textContent")).await;
    assert_eq!(state, "allow by anonymous", "the server's approval chunk settled the dialog");
    assert_eq!(demo.notes(), "call Ada\n");
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn stop_cancels_a_slow_answer_and_nothing_more_of_it_arrives() {
    let slow = numbered_words("s", 40);
    let script = json!([{"text": slow, "delay_ms": 150}, {"text": "Second answer."}]);
    let Some((browser, app)) = page_on_new_app(
        "stop_cancels_a_slow_answer_and_nothing_more_of_it_arrives",
        Options { script: Some(script), ..Options::default() },
    )
    .await
    else {
        return;
    };
    browser.send_message("tell me slowly").await;
    browser.wait_js("the answer has begun", &format!("{LAST_ANSWER}.includes('s03')")).await;
    assert_eq!(browser.js("document.getElementById('stop').hidden").await, false, "Stop is offered while it runs");

    browser.type_message(ESCAPE).await;
    browser.wait_js("the request is cancelled", &format!("{LAST_STATUS} === 'cancelled'")).await;
    let footer = browser.js("document.querySelector('.request .footer').textContent").await;
    assert!(footer.as_str().expect("footer").contains("cancelled"), "the page says so: {footer}");
    assert_eq!(browser.js("document.getElementById('stop').hidden").await, true);
    let at_cancel = browser.js("document.querySelector('.request .answer').innerText").await;

    // A later request on the same socket completes; by then anything late of the first would be here.
    ask(&browser, "and now?", "complete").await;
    let first = browser.js("document.querySelector('.request .answer').innerText").await;
    assert_eq!(first, at_cancel, "nothing of the cancelled answer arrived after it ended");
    assert!(!first.as_str().expect("text").contains("s40"), "the answer was cut short: {first}");
    let events = app.events();
    let ended = events.iter().find(|event| event["extra"]["status"] == "cancelled");
    assert!(ended.is_some(), "the store records the cancel: {events:#?}");
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_lost_connection_is_resumed_without_a_missing_or_repeated_word() {
    let live = numbered_words("w", 30);
    let finished_while_away = numbered_words("v", 30);
    let script = json!([{"text": live, "delay_ms": 100}, {"text": finished_while_away, "delay_ms": 100}]);
    let Some(browser) = Browser::start("a_lost_connection_is_resumed_without_a_missing_or_repeated_word").await else {
        return;
    };
    let app = TestApp::start(Options { script: Some(script), ..Options::default() }).await;
    let proxy = CuttingProxy::start(app.addr).await;
    browser.open_page(proxy.addr).await;

    // The connection drops mid-answer; the page reconnects and resumes after the last seq it saw.
    browser.send_message("first").await;
    browser.wait_js("the answer has begun", &format!("{LAST_ANSWER}.includes('w04')")).await;
    let before_cut = proxy.relayed();
    proxy.cut();
    assert_ne!(browser.js(LAST_STATUS).await, "complete", "the cut came mid-answer");
    browser.wait_js("the resumed request completes", &format!("{LAST_STATUS} === 'complete'")).await;
    assert_eq!(browser.js(LAST_ANSWER).await, live.as_str(), "every word exactly once");
    assert!(proxy.relayed() > before_cut, "the page opened a new connection");

    // The connection stays down until the request has finished: the server replays it whole.
    browser.send_message("second").await;
    browser.wait_js("the answer has begun", &format!("{LAST_ANSWER}.includes('v04')")).await;
    let request_id = browser.js(&format!("{LAST_REQUEST}.dataset.requestId")).await;
    proxy.set_gate(false);
    proxy.cut();
    browser.wait_js("the page notices", "document.getElementById('status').dataset.state === 'waiting'").await;
    let finished = |event: &Value| event["request_id"] == request_id && event["extra"]["status"] == "complete";
    poll("the request finished on the server", async || app.events().iter().any(finished).then_some(())).await;
    proxy.set_gate(true);
    browser.wait_js("the replayed request completes", &format!("{LAST_STATUS} === 'complete'")).await;
    assert_eq!(browser.js(LAST_ANSWER).await, finished_while_away.as_str(), "every word exactly once");
    let footer = browser.js(LAST_FOOTER).await;
    assert!(footer.as_str().expect("footer").contains("from the store"), "it came as a replay: {footer}");
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_restarted_server_is_reconnected_to_and_the_answer_stays_whole() {
    let Some(browser) = Browser::start("a_restarted_server_is_reconnected_to_and_the_answer_stays_whole").await else {
        return;
    };
    let store = tempfile::tempdir().expect("store dir");
    let store_path = Some(store.path().join("events.jsonl"));
    let answer = numbered_words("r", 20);
    let script = json!([{"text": answer, "delay_ms": 100}]);
    let first =
        TestApp::start(Options { script: Some(script), store_path: store_path.clone(), ..Options::default() }).await;
    let proxy = CuttingProxy::start(first.addr).await;
    browser.open_page(proxy.addr).await;
    browser.send_message("before the restart").await;
    browser.wait_js("the answer has begun", &format!("{LAST_ANSWER}.includes('r04')")).await;

    // A graceful shutdown lets the running answer finish, then closes the socket (1001).
    let before_restart = proxy.relayed();
    first.shutdown().await;
    let second = TestApp::start(Options { store_path, ..Options::default() }).await;
    proxy.set_upstream(second.addr);
    browser.wait_js("the page is connected again", "document.getElementById('status').dataset.state === 'open'").await;
    assert_eq!(browser.js(LAST_STATUS).await, "complete");
    assert_eq!(browser.js(LAST_ANSWER).await, answer.as_str(), "every word exactly once");

    // The same conversation goes on in the new process.
    ask(&browser, "what is 2+3", "complete").await;
    assert!(browser.js(LAST_ANSWER).await.as_str().expect("text").contains("2 + 3 = 5"));
    assert!(proxy.relayed() > before_restart, "the page connected to the new process");
    let conversations: std::collections::BTreeSet<String> =
        second.events().iter().map(|event| event["conversation_id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(conversations.len(), 1, "one conversation across both processes");
    browser.close().await;
    second.shutdown().await;
}

#[tokio::test]
async fn switching_conversations_shows_each_ones_history_from_the_store() {
    let Some((browser, app)) =
        page_on_new_app("switching_conversations_shows_each_ones_history_from_the_store", Options::default()).await
    else {
        return;
    };
    ask(&browser, "what is 2+3", "complete").await;
    browser.click("#new-conversation").await;
    assert_eq!(browser.js("document.querySelectorAll('#transcripts .request').length").await, 0);
    ask(&browser, "hello there", "complete").await;

    let events = app.events();
    let conversation_of = |text: &str| {
        let event = events.iter().find(|event| event["content"] == text).expect("the question is stored");
        event["conversation_id"].as_str().expect("id").to_owned()
    };
    let (sum, hello) = (conversation_of("what is 2+3"), conversation_of("hello there"));
    assert_ne!(sum, hello);

    // A fresh load knows only what the store has.
    browser.open_page(app.addr).await;
    let listed = "document.querySelectorAll('#conversations button[data-conversation-id]').length === 2";
    browser.wait_js("both conversations are listed", listed).await;
    let shown = "document.querySelector('#transcripts .transcript').innerText";
    for (conversation, question, other) in
        [(&sum, "what is 2+3", "hello there"), (&hello, "hello there", "what is 2+3")]
    {
        browser.click(&format!("#conversations button[data-conversation-id=\"{conversation}\"]")).await;
        let text = browser.wait_js("its history is shown", &format!("{shown}.includes({question:?}) && {shown}")).await;
        let text = text.as_str().expect("text");
        assert!(!text.contains(other), "only this conversation: {text}");
        assert!(text.contains("offline demo") || text.contains("2 + 3 = 5"), "its answer: {text}");
    }
    // The sum's tool card is part of its history.
    browser.click(&format!("#conversations button[data-conversation-id=\"{sum}\"]")).await;
    let card = browser.wait_js("the tool card", "document.querySelector('#transcripts .tool')?.dataset.tool").await;
    assert_eq!(card, "demo__sum");
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_page_has_a_strict_csp_and_runs_under_it_without_violations() {
    let Some((browser, app)) =
        page_on_new_app("the_page_has_a_strict_csp_and_runs_under_it_without_violations", Options::default()).await
    else {
        return;
    };
    let http = reqwest::Client::new();
    let page = http.get(format!("http://{}/", app.addr)).send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    let header = |response: &reqwest::Response, name: &str| {
        response.headers().get(name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned()
    };
    let csp = header(&page, "content-security-policy");
    for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive:?}");
    }
    assert!(!csp.contains("unsafe"), "no unsafe-inline or unsafe-eval: {csp}");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    let etag = header(&page, "etag");
    let html = page.text().await.expect("page body");
    assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style");
    let revalidated =
        http.get(format!("http://{}/", app.addr)).header("if-none-match", &etag).send().await.expect("GET /");
    assert_eq!(revalidated.status(), 304);

    let asset =
        html.split('"').find(|part| part.starts_with("/assets/") && part.ends_with("/app.js")).expect("app.js URL");
    let script = http.get(format!("http://{}{asset}", app.addr)).send().await.expect("GET app.js");
    assert_eq!(script.status(), 200);
    assert_eq!(header(&script, "cache-control"), "public, max-age=31536000, immutable");
    assert!(header(&script, "content-type").starts_with("text/javascript"));
    let stale = asset.replace("/assets/", "/assets/0000").replace("/app.js", "x/app.js");
    assert_eq!(http.get(format!("http://{}{stale}", app.addr)).send().await.expect("GET").status(), 404);

    // The whole page at work: markdown, a tool card, the socket.
    ask(&browser, "what is 2+3", "complete").await;
    let console = browser.console().await;
    let problems: Vec<&Value> =
        console.iter().filter(|entry| entry["level"] == "SEVERE" || entry["level"] == "WARNING").collect();
    assert!(problems.is_empty(), "no CSP violation or error in the console: {problems:#?}");

    // The console is really read: a violation the test causes shows up in it.
    browser
        .js("document.body.append(Object.assign(document.createElement('img'), {src: 'http://192.0.2.1/x.png'}))")
        .await;
    let reported = |entry: &Value| entry["message"].as_str().unwrap_or_default().contains("Content Security Policy");
    poll("a CSP violation reaches the console log", async || {
        browser.console().await.iter().any(reported).then_some(())
    })
    .await;
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_first_load_is_small_and_quickly_usable() {
    let Some((browser, app)) = page_on_new_app("a_first_load_is_small_and_quickly_usable", Options::default()).await
    else {
        return;
    };
    let bytes = browser
        .js("performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).reduce((sum, entry) => sum + entry.transferSize, 0)")
        .await
        .as_u64()
        .expect("bytes");
    let ready_ms = browser.js("performance.getEntriesByName('input-ready')[0].startTime").await.as_f64().expect("ms");
    let files = browser.js("performance.getEntriesByType('resource').length").await;
    println!(
        "page first load: {bytes} bytes transferred in {files} files + the HTML; input ready after {ready_ms:.0} ms"
    );
    assert!(bytes < 200 * 1024, "page weight {bytes} bytes is over the 200 KB budget");
    assert!(bytes > 50 * 1024, "the page's own assets were counted ({bytes} bytes)");
    // The budget is 300 ms on an idle machine; a loaded test machine gets room, not a free pass.
    assert!(ready_ms < 1000.0, "the input became usable after {ready_ms} ms");
    browser.close().await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_socket_selects_the_pages_subprotocol_beside_a_bearer_credential() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = TestApp::start(Options::default()).await;
    for offered in ["mcp-platform.v1, bearer.some-api-key", "mcp-platform.v1"] {
        let mut request = format!("ws://{}/ws/chat", app.addr).into_client_request().expect("request");
        request.headers_mut().insert("sec-websocket-protocol", offered.parse().expect("header value"));
        let (_, response) = tokio_tungstenite::connect_async(request).await.expect("upgrade");
        assert_eq!(response.headers()["sec-websocket-protocol"], "mcp-platform.v1", "offered {offered:?}");
    }
    // Clients that offer no subprotocol (non-browsers) are served as before.
    let (_, response) = tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", app.addr)).await.expect("upgrade");
    assert!(response.headers().get("sec-websocket-protocol").is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn with_auth_on_a_wrong_key_is_refused_in_words_and_the_right_one_chats_without_being_kept() {
    const KEY: &str = "page-key-made-for-this-test";
    let test = "with_auth_on_a_wrong_key_is_refused_in_words_and_the_right_one_chats_without_being_kept";
    let Some(browser) = support::browser::Browser::start(test).await else { return };
    let app = TestApp::start(Options {
        configure: Box::new(|settings| {
            settings.auth.mode = mcp_platform::config::AuthMode::ApiKeys;
            settings.auth.api_keys = vec![mcp_platform::config::ApiKeyEntry {
                user: "alice".to_owned(),
                role: mcp_platform::auth::Role::User,
                key_sha256: mcp_platform::config::Secret::new(mcp_platform::auth::key_sha256(KEY)),
            }];
        }),
        ..Options::default()
    })
    .await;
    browser.client.goto(&format!("http://{}/", app.addr)).await.expect("load the page");
    browser.wait_js("the page asks to sign in", "document.getElementById('status').dataset.state === 'refused'").await;

    let sign_in = async |key: &str| {
        let field = browser.client.find(fantoccini::Locator::Id("credential")).await.expect("#credential");
        field.send_keys(key).await.expect("type the key");
        browser.click("#signin-button").await;
    };
    sign_in("not-the-key").await;
    let error = browser
        .wait_js(
            "the wrong key is refused in words",
            "document.getElementById('error').hidden ? '' : document.getElementById('error').textContent",
        )
        .await;
    assert!(error.as_str().unwrap().contains("valid API key or token"), "{error}");

    browser.click("#signout").await;
    sign_in(KEY).await;
    // The browser sends the page's own Origin: the check admits it.
    browser.wait_js("the socket connects", "document.getElementById('status').dataset.state === 'open'").await;
    ask(&browser, "what is 2+3", "complete").await;
    assert!(browser.js(LAST_ANSWER).await.as_str().unwrap().contains('5'));

    let kept = browser
        .js("JSON.stringify(localStorage) + document.cookie + location.href + document.documentElement.outerHTML")
        .await;
    assert!(!kept.as_str().unwrap().contains(KEY), "the key is kept outside session storage: {kept}");
    assert!(app.events().iter().all(|event| event["user"] == "alice"));
    browser.close().await;
    app.shutdown().await;
}
