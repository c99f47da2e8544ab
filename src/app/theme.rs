//! Every colour the window uses, for light and dark mode. No other file of
//! the window names a colour.

use eframe::egui::Color32;

use crate::model::TaskStatus;

/// The palette for one mode.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    /// True in dark mode.
    pub dark: bool,
}

impl Theme {
    /// The palette matching the visuals in use.
    pub fn new(dark: bool) -> Self {
        Self { dark }
    }

    fn pick(self, light: Color32, dark: Color32) -> Color32 {
        if self.dark { dark } else { light }
    }

    /// Colour of a status label.
    pub fn status(self, status: TaskStatus) -> Color32 {
        match status {
            TaskStatus::Queued => self.pick(
                Color32::from_rgb(90, 90, 110),
                Color32::from_rgb(170, 170, 190),
            ),
            TaskStatus::Running => self.pick(
                Color32::from_rgb(20, 100, 200),
                Color32::from_rgb(90, 160, 250),
            ),
            TaskStatus::Retrying => self.pick(
                Color32::from_rgb(190, 110, 0),
                Color32::from_rgb(245, 170, 60),
            ),
            TaskStatus::Completed => self.pick(
                Color32::from_rgb(20, 130, 60),
                Color32::from_rgb(90, 200, 120),
            ),
            TaskStatus::Failed => self.pick(
                Color32::from_rgb(190, 30, 30),
                Color32::from_rgb(245, 95, 95),
            ),
            TaskStatus::Cancelled => self.pick(
                Color32::from_rgb(120, 120, 120),
                Color32::from_rgb(140, 140, 140),
            ),
        }
    }

    /// Inline error messages.
    pub fn error(self) -> Color32 {
        self.pick(
            Color32::from_rgb(190, 30, 30),
            Color32::from_rgb(245, 110, 110),
        )
    }

    /// Something that holds work back without being an error (a queue at
    /// its limit).
    pub fn warning(self) -> Color32 {
        self.status(TaskStatus::Retrying)
    }

    /// Notices that something worked.
    pub fn success(self) -> Color32 {
        self.status(TaskStatus::Completed)
    }

    /// Secondary text.
    pub fn weak(self) -> Color32 {
        self.pick(
            Color32::from_rgb(110, 110, 110),
            Color32::from_rgb(150, 150, 150),
        )
    }

    /// CPU series.
    pub fn cpu(self) -> Color32 {
        self.pick(
            Color32::from_rgb(30, 110, 210),
            Color32::from_rgb(100, 170, 255),
        )
    }

    /// RAM series.
    pub fn ram(self) -> Color32 {
        self.pick(
            Color32::from_rgb(140, 60, 180),
            Color32::from_rgb(190, 130, 240),
        )
    }

    /// GPU utilisation series.
    pub fn gpu(self) -> Color32 {
        self.pick(
            Color32::from_rgb(20, 140, 80),
            Color32::from_rgb(90, 210, 140),
        )
    }

    /// GPU memory series.
    pub fn gpu_memory(self) -> Color32 {
        self.pick(
            Color32::from_rgb(0, 130, 130),
            Color32::from_rgb(80, 200, 200),
        )
    }

    /// Disk series.
    pub fn disk(self) -> Color32 {
        self.pick(
            Color32::from_rgb(170, 110, 20),
            Color32::from_rgb(230, 170, 70),
        )
    }

    /// Task-start markers on the plots.
    pub fn marker_started(self) -> Color32 {
        self.pick(
            Color32::from_rgba_unmultiplied(20, 100, 200, 90),
            Color32::from_rgba_unmultiplied(90, 160, 250, 90),
        )
    }

    /// Task-finish markers on the plots.
    pub fn marker_finished(self) -> Color32 {
        self.pick(
            Color32::from_rgba_unmultiplied(20, 130, 60, 90),
            Color32::from_rgba_unmultiplied(90, 200, 120, 90),
        )
    }

    /// Progress bars (the table's and the details').
    pub fn progress(self) -> Color32 {
        self.status(TaskStatus::Running)
    }

    /// Lines of a metric's plot in the details.
    pub fn metric(self) -> Color32 {
        self.pick(
            Color32::from_rgb(200, 80, 20),
            Color32::from_rgb(250, 150, 80),
        )
    }

    /// Background of the text a log search found.
    pub fn highlight(self) -> Color32 {
        self.pick(
            Color32::from_rgb(255, 225, 110),
            Color32::from_rgb(120, 95, 20),
        )
    }

    /// Background of selected table rows is egui's own; this marks the
    /// row of the task shown in the details panel.
    pub fn focus(self) -> Color32 {
        self.pick(
            Color32::from_rgb(20, 100, 200),
            Color32::from_rgb(90, 160, 250),
        )
    }
}
