//! Aggregates: state folded from events. Commands are pure functions of a state
//! that return the events to append (`Result<Vec<Event>, Error>`); applying an
//! event cannot fail.

/// State rebuilt from one stream's events.
pub trait Aggregate: Default {
    type Event;

    /// Folds one event in. Never fails: the event is a fact that happened.
    fn apply(&mut self, event: &Self::Event);

    fn from_events<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}

/// given(events).when(command).then(events): the domain's test language.
pub struct Given<A> {
    state: A,
}

/// The state after `events`.
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let mut state = A::default();
    for event in events {
        state.apply(&event);
    }
    Given { state }
}

impl<A: Aggregate> Given<A> {
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Runs a decision against the state.
    pub fn when<E>(self, decide: impl FnOnce(&A) -> Result<Vec<A::Event>, E>) -> Then<A, E> {
        let result = decide(&self.state);
        Then {
            state: self.state,
            result,
        }
    }
}

pub struct Then<A: Aggregate, E> {
    state: A,
    result: Result<Vec<A::Event>, E>,
}

impl<A, E> Then<A, E>
where
    A: Aggregate,
    A::Event: std::fmt::Debug + PartialEq,
    E: std::fmt::Debug + PartialEq,
{
    /// Asserts the decision produced exactly these events; returns the new state.
    #[track_caller]
    pub fn then(self, expected: Vec<A::Event>) -> A {
        assert_eq!(self.result, Ok(expected));
        let mut state = self.state;
        for event in self.result.expect("checked above") {
            state.apply(&event);
        }
        state
    }

    /// Asserts the decision failed with this error (and so decided nothing).
    #[track_caller]
    pub fn then_err(self, expected: E) {
        assert_eq!(self.result, Err(expected));
    }

    /// The raw result, for checks `then` cannot express.
    pub fn result(self) -> Result<Vec<A::Event>, E> {
        self.result
    }
}
