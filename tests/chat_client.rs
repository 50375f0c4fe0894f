//! `mcp-platform chat`, the terminal client, as a person at a terminal uses it: the binary in a
//! pseudo-terminal, the test typing at the keyboard and reading the screen, answering the
//! questions the client asks (approvals with `y` and `n`, a form field with a name) against
//! the app on loopback with the demo server as a child process.

mod support;

use serde_json::json;
use support::notes::{NOTES, NotesDemo, annotations_policy};
use support::terminal::Terminal;
use support::*;

#[tokio::test]
async fn at_a_terminal_the_user_allows_and_denies_tool_calls_and_fills_in_a_form() {
    if skip_without("script", "at_a_terminal_the_user_allows_and_denies_tool_calls_and_fills_in_a_form") {
        return;
    }
    let demo = NotesDemo::new();
    let script = json!([
        {"tool_calls": [
            {"id": "call_del", "name": "demo__delete_note", "arguments": {"note": "buy milk"}},
            {"id": "call_ask", "name": "demo__ask_name", "arguments": {}}
        ]},
        {"text": "All done."},
        {"tool_calls": [{"id": "call_keep", "name": "demo__delete_note", "arguments": {"note": "call Ada"}}]},
        {"text": "Kept it."}
    ]);
    let app = TestApp::start(demo.options(script, annotations_policy)).await;
    let mut terminal = Terminal::start(&binary("mcp-platform"), &["chat", &format!("ws://{}/ws/chat", app.addr)]);
    terminal.expect(&["type a message"]).await;

    terminal.type_line("tidy my notes and greet me").await;
    terminal.expect(&[r#"? allow demo__delete_note (server demo) with {"note":"buy milk"}? [y/n]"#]).await;
    assert_eq!(demo.notes(), NOTES, "nothing is deleted while the user is asked");
    terminal.type_line("y").await;
    // `ask_name` runs meanwhile (it is read-only); its form is asked once the approval is answered.
    terminal.expect(&["? demo asks: What is your name?", "Name (string):"]).await;
    terminal.type_line("Ada").await;
    terminal.expect(&["accept by anonymous", "demo__ask_name = Hello, Ada!", "All done.", "tokens"]).await;
    let screen = terminal.screen_text();
    assert!(screen.contains("call_del allow by anonymous"), "{screen}");
    assert!(screen.contains(r#"demo__delete_note = deleted "buy milk""#), "{screen}");
    assert_eq!(demo.notes(), "call Ada\n", "the allowed call ran");

    terminal.type_line("now delete the other one").await;
    terminal.expect(&[r#"? allow demo__delete_note (server demo) with {"note":"call Ada"}? [y/n]"#]).await;
    terminal.type_line("maybe").await;
    terminal.expect(&["answer y or n"]).await;
    terminal.type_line("n").await;
    let denied = ["call_keep deny by anonymous", "✗ demo__delete_note = denied by the user", "Kept it.", "tokens"];
    terminal.expect(&denied).await;
    assert_eq!(demo.notes(), "call Ada\n", "the denied call never reached the server");

    terminal.type_line("/quit").await;
    let status = terminal.exit_status().await;
    assert!(status.success(), "{status:?}\n{}", terminal.screen_text());
    assert_verifies(&app.store_path);
    app.shutdown().await;
}
