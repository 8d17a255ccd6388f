//! `q8s monitor`: the seed's qmonitor, a live table of every cluster on the
//! broker, refreshed every second until `q` is pressed; `--once` (or an
//! output that is no terminal) prints the same table one time, as text.
//!
//! One drawing function serves both: the live terminal draws it with
//! crossterm, `--once` draws it into a buffer and prints the buffer's lines.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use ratatui::Frame;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Wrap};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{Exit, Failure, say};
use crate::config::Config;
use crate::stat::{self, Stat, StatBoard, State};

/// How often the table is read again, as the seed's monitor did.
const REFRESH: Duration = Duration::from_secs(1);
/// How long one read may take before the monitor says so and goes on (and `q` works again).
const READ_LIMIT: Duration = Duration::from_secs(2);
/// How long the live table waits between looks for a key.
const KEY_WAIT: Duration = Duration::from_millis(50);
/// The smallest terminal the table fits: its fixed columns and a short host.
pub(super) const MIN_WIDTH: u16 = 60;
/// A header, the column names, one cluster and the footer.
pub(super) const MIN_HEIGHT: u16 = 4;

/// What one refresh read: every live cluster, the broker's queue, the rate.
#[derive(Debug, Clone, Default)]
pub(super) struct View {
    /// The configuration's label (the seed's `label`).
    pub label: String,
    /// The queue (cluster name) the clusters work.
    pub name: String,
    /// The live clusters of the queue.
    pub stats: Vec<Stat>,
    /// Packages waiting in the broker, when it answered.
    pub queued: Option<u64>,
    /// Tasks finished per second since the last refresh, once there was one.
    pub throughput: Option<f64>,
    /// Why the last read failed, when it did (the table then shows the last good one).
    pub error: Option<String>,
}

/// Finished tasks per second between two readings, summed cluster by
/// cluster over each cluster's own Stat times (a cluster publishes every 3 s,
/// more slowly than the monitor reads); `None` when no cluster published
/// anew. A cluster that appears counts from its first reading, and one that
/// leaves takes nothing away.
pub(super) fn throughput(before: &[Stat], after: &[Stat]) -> Option<f64> {
    let finished = |stat: &Stat| stat.successes + stat.failures;
    let earlier: HashMap<(&str, &str), &Stat> = before
        .iter()
        .map(|stat| ((stat.host.as_str(), stat.cluster_id.as_str()), stat))
        .collect();
    let mut rate = None;
    for stat in after {
        let Some(then) = earlier.get(&(stat.host.as_str(), stat.cluster_id.as_str())) else {
            continue;
        };
        let seconds = (stat.timestamp - then.timestamp).num_milliseconds() as f64 / 1000.0;
        if seconds > 0.0 {
            let done = finished(stat).saturating_sub(finished(then)) as f64;
            *rate.get_or_insert(0.0) += done / seconds;
        }
    }
    rate
}

fn state_style(state: &State) -> Style {
    match state {
        State::Starting => Style::new().fg(Color::Cyan),
        State::Idle => Style::new(),
        State::Working => Style::new().fg(Color::Green),
        State::Stopping => Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        State::Stopped => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

fn right(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).right_aligned())
}

/// Draws the monitor into `frame`: a header with the label and totals, the
/// clusters' table (the seed's columns), and a footer with the throughput.
pub(super) fn draw(frame: &mut Frame, view: &View) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let message = format!(
            "q8s monitor needs {MIN_WIDTH}x{MIN_HEIGHT}; this terminal is {}x{}. q quits.",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(message).wrap(Wrap { trim: true }), area);
        return;
    }
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(2),
        Constraint::Length(1),
    ])
    .areas(area);

    let workers: usize = view.stats.iter().map(|stat| stat.workers.len()).sum();
    let running: u64 = view.stats.iter().map(|stat| stat.running).sum();
    let queued = view
        .queued
        .map_or("-".to_string(), |queued| queued.to_string());
    let title = Line::from(vec![
        Span::from(format!(" {} ", view.label)).reversed().bold(),
        Span::from(format!(
            " {}  clusters {}  workers {}  queued {}  running {}",
            view.name,
            view.stats.len(),
            workers,
            queued,
            running
        )),
    ]);
    frame.render_widget(Paragraph::new(title), header);
    frame.render_widget(table(view), body);

    let line = match &view.error {
        Some(error) => Line::from(format!(" {error}")).red(),
        None => {
            let successes: u64 = view.stats.iter().map(|stat| stat.successes).sum();
            let failures: u64 = view.stats.iter().map(|stat| stat.failures).sum();
            let rate = view
                .throughput
                .map_or("-".to_string(), |rate| format!("{rate:.1}"));
            Line::from(format!(
                " {rate} tasks/s  successes {successes}  failures {failures}  q quits"
            ))
        }
    };
    frame.render_widget(Paragraph::new(line), footer);
}

fn table(view: &View) -> Table<'static> {
    let heading = Row::new(
        ["Host", "Id", "State", "Pool", "TQ", "RQ", "RC", "Up"]
            .into_iter()
            .enumerate()
            .map(|(column, name)| {
                if column >= 3 {
                    right(name.to_string())
                } else {
                    Cell::from(name)
                }
            }),
    )
    .bold()
    .underlined();
    let rows = view.stats.iter().map(|stat| {
        // The seed's monitor turns TQ green once the queue limit is reached.
        let full = stat.queue_limit > 0 && stat.task_queue >= stat.queue_limit;
        let task_queue = right(stat.task_queue.to_string());
        Row::new(vec![
            Cell::from(stat.host.clone()),
            Cell::from(stat.cluster_id.clone()),
            Cell::from(format!("{:?}", stat.state)).style(state_style(&stat.state)),
            right(stat.workers.len().to_string()),
            if full {
                task_queue.green().bold()
            } else {
                task_queue
            },
            right(stat.result_queue.to_string()),
            right(stat.reincarnations.to_string()),
            right(super::cluster::uptime(stat.uptime())),
        ])
    });
    Table::new(
        rows,
        [
            Constraint::Min(12),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(4),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(4),
            Constraint::Length(9),
        ],
    )
    .header(heading)
    .column_spacing(1)
}

/// The view drawn into a `width` × `height` buffer, as lines of text without trailing blanks.
pub(super) fn text(view: &View, width: u16, height: u16) -> Vec<String> {
    let backend = TestBackend::new(width, height);
    // A buffer cannot fail to be drawn into (its error type is Infallible).
    let Ok(mut terminal) = ratatui::Terminal::new(backend);
    let Ok(_) = terminal.draw(|frame| draw(frame, view));
    let buffer = terminal.backend().buffer();
    let area: Rect = buffer.area;
    (0..area.height)
        .map(|y| {
            let line: String = (0..area.width)
                .map(|x| buffer[(x, y)].symbol().to_string())
                .collect();
            line.trim_end().to_string()
        })
        .collect()
}

/// Reads the clusters and the queue into `view`, keeping the last good table on failure.
async fn refresh(
    view: &mut View,
    board: &dyn StatBoard,
    broker: &dyn crate::broker::Broker,
    last: &mut Vec<Stat>,
) {
    match Stat::all(board).await {
        Ok(mut stats) => {
            // The SQL store's board holds every queue's clusters: this queue's are shown.
            stats.retain(|stat| stat.name == view.name);
            if let Some(rate) = throughput(last, &stats) {
                view.throughput = Some(rate);
            }
            last.clone_from(&stats);
            view.stats = stats;
            view.error = None;
        }
        Err(error) => view.error = Some(format!("cannot read the clusters' Stat: {error}")),
    }
    match broker.queue_size().await {
        Ok(queued) => view.queued = Some(queued),
        Err(error) => {
            view.queued = None;
            view.error = Some(format!("cannot read the queue: {error}"));
        }
    }
}

/// `q8s monitor`: live until `q`, or once when asked or when stdout is no terminal.
pub(super) async fn monitor(config: Config, once: bool) -> Result<Exit, Failure> {
    let opened = crate::broker::connect(&config, None)
        .await
        .map_err(|e| Failure::from(crate::client::ClientError::from(e)))?;
    // Redis keeps the Stats itself: its board is the connection just opened.
    let board = match &opened.board {
        Some(board) => board.clone(),
        None => stat::board(&config, None).await?,
    };
    let mut view = View {
        label: config.label.clone(),
        name: config.name.clone(),
        ..View::default()
    };
    let mut last = Vec::new();
    refresh(&mut view, board.as_ref(), opened.queue.as_ref(), &mut last).await;
    if once || !std::io::stdout().is_terminal() {
        let (width, _) = ratatui::crossterm::terminal::size().unwrap_or((80, 24));
        // Tall enough for every cluster: the text is printed, not scrolled.
        let height = (view.stats.len() as u16).saturating_add(3).max(MIN_HEIGHT);
        for line in text(&view, width.max(MIN_WIDTH), height) {
            say(line)?;
        }
        return Ok(if view.error.is_some() {
            Exit::Unavailable
        } else {
            Exit::Ok
        });
    }
    let mut endings = Endings::new()?;
    let mut terminal = ratatui::try_init()
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot use this terminal: {e}")))?;
    let outcome = live(
        &mut terminal,
        &mut view,
        board.as_ref(),
        &opened,
        &mut last,
        &mut endings,
    )
    .await;
    ratatui::restore();
    outcome
}

/// The signals that end the live table: `kill`, a closed SSH session, an
/// interrupt sent from elsewhere (in raw mode Ctrl-C is a key, not a signal).
/// Caught, so the terminal is given back out of raw mode instead of left in it.
struct Endings {
    terminate: Signal,
    hangup: Signal,
    interrupt: Signal,
}

impl Endings {
    fn new() -> Result<Endings, Failure> {
        let listen = |kind: SignalKind| {
            signal(kind)
                .map_err(|e| Failure::new(Exit::Failed, format!("cannot listen for signals: {e}")))
        };
        Ok(Endings {
            terminate: listen(SignalKind::terminate())?,
            hangup: listen(SignalKind::hangup())?,
            interrupt: listen(SignalKind::interrupt())?,
        })
    }

    /// Waits `time`, or less when one of the signals arrives: whether one did.
    async fn within(&mut self, time: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(time) => false,
            _ = self.terminate.recv() => true,
            _ = self.hangup.recv() => true,
            _ = self.interrupt.recv() => true,
        }
    }
}

async fn live(
    terminal: &mut ratatui::DefaultTerminal,
    view: &mut View,
    board: &dyn StatBoard,
    opened: &crate::broker::Opened,
    last: &mut Vec<Stat>,
    endings: &mut Endings,
) -> Result<Exit, Failure> {
    let failed = |e: std::io::Error| Failure::new(Exit::Failed, format!("the terminal: {e}"));
    loop {
        terminal.draw(|frame| draw(frame, view)).map_err(failed)?;
        let next = Instant::now() + REFRESH;
        // Keys are looked for between short waits, so the next refresh is on
        // time, a resize redraws at once, and the runtime sees the signals.
        while Instant::now() < next {
            if !event::poll(Duration::ZERO).map_err(failed)? {
                if endings.within(KEY_WAIT).await {
                    return Ok(Exit::Ok);
                }
                continue;
            }
            match event::read().map_err(failed)? {
                Event::Key(key) if key.kind == KeyEventKind::Press => {
                    let control_c = key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(key.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc) || control_c {
                        return Ok(Exit::Ok);
                    }
                }
                Event::Resize(..) => {
                    terminal.draw(|frame| draw(frame, view)).map_err(failed)?;
                }
                _ => {}
            }
        }
        // A broker that does not answer holds the table up for at most READ_LIMIT.
        let read = refresh(view, board, opened.queue.as_ref(), last);
        if tokio::time::timeout(READ_LIMIT, read).await.is_err() {
            view.error = Some(format!(
                "the broker or store did not answer within {READ_LIMIT:?}"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn stat(host: &str, id: &str, state: State, task_queue: u64, limit: u64) -> Stat {
        Stat {
            cluster_id: id.into(),
            host: host.into(),
            name: "reports".into(),
            state,
            workers: vec![11, 12, 13, 14],
            task_queue,
            result_queue: 1,
            reincarnations: 2,
            tob: Utc::now() - chrono::Duration::seconds(75),
            timestamp: Utc::now(),
            sentinel: 10,
            pusher: 10,
            monitor: 10,
            queue_limit: limit,
            running: 3,
            successes: 40,
            failures: 2,
            oom_kills: 0,
            node: None,
        }
    }

    fn view(stats: Vec<Stat>) -> View {
        View {
            label: "Q8S".into(),
            name: "reports".into(),
            stats,
            queued: Some(7),
            throughput: Some(12.5),
            error: None,
        }
    }

    fn buffer(view: &View, width: u16, height: u16) -> ratatui::buffer::Buffer {
        let Ok(mut terminal) = ratatui::Terminal::new(TestBackend::new(width, height));
        let Ok(_) = terminal.draw(|frame| draw(frame, view));
        terminal.backend().buffer().clone()
    }

    /// The column where `needle` starts on line `y`.
    fn column(lines: &[String], y: usize, needle: &str) -> u16 {
        lines[y]
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle} in {:?}", lines[y])) as u16
    }

    #[test]
    fn the_table_has_the_seeds_columns_header_totals_and_throughput_in_80_columns() {
        let lines = text(
            &view(vec![
                stat("orion", "17004", State::Working, 23, 0),
                stat("phoenix", "14710", State::Idle, 0, 0),
            ]),
            80,
            24,
        );
        assert!(
            lines[0].contains("Q8S") && lines[0].contains("reports"),
            "{lines:?}"
        );
        assert!(lines[0].contains("clusters 2") && lines[0].contains("workers 8"));
        assert!(lines[0].contains("queued 7") && lines[0].contains("running 6"));
        for name in ["Host", "Id", "State", "Pool", "TQ", "RQ", "RC", "Up"] {
            assert!(lines[1].contains(name), "{name} in {:?}", lines[1]);
        }
        assert!(lines[2].starts_with("orion") && lines[2].contains("17004"));
        assert!(
            lines[2].contains("Working") && lines[2].ends_with("0:01:15"),
            "{:?}",
            lines[2]
        );
        assert!(lines[3].starts_with("phoenix") && lines[3].contains("Idle"));
        assert!(lines.iter().all(|line| line.chars().count() <= 80));
        let footer = &lines[23];
        assert!(
            footer.contains("12.5 tasks/s") && footer.contains("successes 80"),
            "{footer}"
        );
        assert!(footer.contains("failures 4") && footer.contains("q quits"));
    }

    #[test]
    fn tq_turns_green_at_the_queue_limit_and_stopping_states_stand_out() {
        let shown = view(vec![
            stat("full", "1", State::Working, 10, 10),
            stat("room", "2", State::Working, 3, 10),
            stat("leaving", "3", State::Stopping, 0, 0),
            stat("gone", "4", State::Stopped, 0, 0),
        ]);
        let buffer = buffer(&shown, 80, 10);
        let lines = text(&shown, 80, 10);
        let tq = column(&lines, 1, "TQ") + 1;
        let state = column(&lines, 1, "State");
        assert_eq!(buffer[(tq, 2)].fg, Color::Green, "TQ at its limit");
        assert_eq!(buffer[(tq, 3)].fg, Color::Reset, "TQ under its limit");
        assert_eq!(buffer[(state, 4)].fg, Color::Yellow, "{:?}", lines[4]);
        assert!(buffer[(state, 4)].modifier.contains(Modifier::BOLD));
        assert_eq!(buffer[(state, 5)].fg, Color::Red, "{:?}", lines[5]);
    }

    #[test]
    fn a_terminal_too_small_says_what_it_needs() {
        let lines = text(&view(vec![stat("orion", "1", State::Idle, 0, 0)]), 40, 3);
        let all = lines.join(" ");
        assert!(
            all.contains("needs 60x4") && all.contains("40x3"),
            "{lines:?}"
        );
        assert!(!all.contains("orion"));
    }

    #[test]
    fn a_failed_read_is_shown_in_the_footer() {
        let mut shown = view(vec![stat("orion", "1", State::Idle, 0, 0)]);
        shown.error = Some("cannot read the queue: connection refused".into());
        let lines = text(&shown, 80, 6);
        assert!(lines[5].contains("connection refused"), "{lines:?}");
        assert!(lines[2].starts_with("orion"), "the last table stays");
    }

    #[test]
    fn throughput_follows_each_clusters_own_stat_times_and_ignores_those_that_came_or_went() {
        let mut before = vec![
            stat("a", "1", State::Working, 0, 0),
            stat("b", "2", State::Working, 0, 0),
        ];
        before[0].successes = 100;
        let mut after = vec![
            stat("a", "1", State::Working, 0, 0),
            stat("c", "3", State::Working, 0, 0),
        ];
        after[0].successes = 130;
        after[0].failures = 12;
        after[0].timestamp = before[0].timestamp + chrono::Duration::seconds(3);
        after[1].successes = 10_000;
        // a: 142 - 102 = 40 finished in its 3 s between Stats; b left, c is new.
        let rate = throughput(&before, &after).expect("a published anew");
        assert!((rate - 40.0 / 3.0).abs() < 1e-9, "{rate}");
        // Read again before any cluster published: no new rate.
        assert_eq!(throughput(&after, &after), None);
    }
}
