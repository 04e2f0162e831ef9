mod controller;
mod queue;
