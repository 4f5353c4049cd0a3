//! `weir test --junit FILE`: the cases as JUnit XML, which CI systems show as test results.

use std::path::Path;

use anyhow::Context;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::FileReport;
use super::case::Outcome;

pub fn write(path: &Path, files: &[FileReport], broken: &[String]) -> anyhow::Result<()> {
    let mut report = Report::new("weir test");
    for file in files {
        let mut suite = TestSuite::new(file.file.display().to_string());
        for case in &file.cases {
            let status = match &case.outcome {
                Outcome::Passed => TestCaseStatus::success(),
                Outcome::Failed(failures) => failure(NonSuccessKind::Failure, failures.join("\n")),
                Outcome::Error(message) => failure(NonSuccessKind::Error, message.clone()),
            };
            let mut test = TestCase::new(case.name.clone(), status);
            test.set_classname(file.file.display().to_string());
            test.set_time(std::time::Duration::from_secs_f64(case.seconds));
            suite.add_test_case(test);
        }
        report.add_test_suite(suite);
    }
    for message in broken {
        let mut suite = TestSuite::new("test files that could not be read");
        suite.add_test_case(TestCase::new("load", failure(NonSuccessKind::Error, message.clone())));
        report.add_test_suite(suite);
    }
    let xml = report.to_string().context("cannot render the JUnit report")?;
    std::fs::write(path, xml).with_context(|| format!("cannot write {}", path.display()))
}

fn failure(kind: NonSuccessKind, text: String) -> TestCaseStatus {
    let mut status = TestCaseStatus::non_success(kind);
    if let TestCaseStatus::NonSuccess { message, description, .. } = &mut status {
        *message = text.lines().next().map(Into::into);
        *description = Some(text.into());
    }
    status
}
