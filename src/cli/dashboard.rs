//! `taskdeck dashboard`: prints the web dashboard's address with the
//! owner's secret in its fragment, so one click opens it signed in.
//! Browsers never send a fragment to the server, and the page removes it
//! from the address bar once read.

use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// The server's URL (the dashboard is at its root).
    #[arg(long, env = "TASKDECK_URL", default_value = "http://127.0.0.1:5000")]
    url: String,
    /// The token to put in the link; by default the local secret of a
    /// server on this machine that runs as this account.
    #[arg(long, env = "TASKDECK_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// `taskdeck dashboard`.
pub(crate) fn dashboard(args: DashboardArgs) -> anyhow::Result<()> {
    let DashboardArgs { url, token } = args;
    let root = format!("{}/", url.trim_end_matches('/'));
    let secret = token
        .filter(|token| !token.is_empty())
        .or_else(|| taskdeck::client::secret::discover(&url));
    match secret {
        Some(secret) => {
            println!("{root}#token={}", fragment_encode(&secret));
            eprintln!("This link holds the server's secret: do not share it.");
        }
        None => {
            println!("{root}");
            eprintln!(
                "No secret found for {url} on this machine; the page will ask for the \
                 server's secret or --token."
            );
        }
    }
    Ok(())
}

/// Percent-encodes all but the characters a URL fragment value keeps as
/// they are.
fn fragment_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::fragment_encode;

    #[test]
    fn secrets_are_encoded_for_the_fragment() {
        assert_eq!(fragment_encode("abc-123_x.y~"), "abc-123_x.y~");
        assert_eq!(fragment_encode("a+b/c=&d"), "a%2Bb%2Fc%3D%26d");
    }
}
