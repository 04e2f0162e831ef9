mod model;
mod subscriber;
mod unit;
mod wait;
