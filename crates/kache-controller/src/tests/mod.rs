mod controller;
mod queue;
mod within;
