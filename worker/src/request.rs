//! The task request: what to enqueue, before it becomes a [`Task`] with an id.

use serde_json::{Map, Value};

use crate::options::{OptionsError, TaskOptions};
use crate::task::{Cached, Task};

/// What to enqueue: the seed's `async(func, *args, hook, group, timeout, save, cached, sync, q_options, **kwargs)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskRequest {
    /// Dotted function name.
    pub func: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// The task's own settings.
    pub options: TaskOptions,
}

impl TaskRequest {
    /// A request to run `func`.
    pub fn new(func: impl Into<String>) -> TaskRequest {
        TaskRequest {
            func: func.into(),
            ..TaskRequest::default()
        }
    }

    /// Adds a positional argument.
    pub fn arg(mut self, value: impl Into<Value>) -> TaskRequest {
        self.args.push(value.into());
        self
    }

    /// Adds a keyword argument.
    pub fn kwarg(mut self, name: &str, value: impl Into<Value>) -> TaskRequest {
        self.kwargs.insert(name.to_string(), value.into());
        self
    }

    /// Sets the hook: a function, a URL or `exec:PROGRAM`.
    pub fn hook(mut self, hook: impl Into<String>) -> TaskRequest {
        self.options.hook = Some(hook.into());
        self
    }

    /// Sets the group label.
    pub fn group(mut self, group: impl Into<String>) -> TaskRequest {
        self.options.group = Some(group.into());
        self
    }

    /// Sets the task's own timeout, in seconds.
    pub fn timeout(mut self, seconds: u64) -> TaskRequest {
        self.options.timeout = Some(seconds);
        self
    }

    /// Keeps the result in the cache.
    pub fn cached(mut self, cached: Cached) -> TaskRequest {
        self.options.cached = Some(cached);
        self
    }

    /// Applies the seed's `q_options` dict: hook, group, timeout, save, cached, sync, ack_failure.
    /// Like the seed, these override the options set one by one.
    pub fn q_options(mut self, options: &Map<String, Value>) -> Result<TaskRequest, OptionsError> {
        let given = TaskOptions::from_q_options(options)?;
        self.options = self.options.overridden_by(given);
        Ok(self)
    }

    /// The task this request describes, with a fresh id.
    pub fn into_task(self) -> Task {
        let mut task = Task::new(self.func);
        task.args = self.args;
        task.kwargs = self.kwargs;
        task.hook = self.options.hook;
        task.group = self.options.group;
        task.timeout = self.options.timeout;
        task.save = self.options.save;
        task.ack_failure = self.options.ack_failure;
        task.cached = self.options.cached.filter(|cached| *cached != Cached::Off);
        task
    }
}
