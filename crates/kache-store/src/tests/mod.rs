mod model;
mod subscriber;
mod unit;
