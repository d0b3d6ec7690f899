//! The command-line options for a mutual-TLS connection to the aggregator,
//! shared by the agent and the query commands.

use std::path::PathBuf;

use clap::Args;
use wijkradar_agent::ClientTls;

#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The aggregator's address.
    #[arg(
        long,
        env = "WIJKRADAR_SERVER",
        default_value = "https://127.0.0.1:50051"
    )]
    pub server: String,
    /// CA certificate that signed the server's certificate (PEM).
    #[arg(long, env = "WIJKRADAR_CA")]
    pub ca: PathBuf,
    /// This organisation's client certificate (PEM).
    #[arg(long, env = "WIJKRADAR_CERT")]
    pub cert: PathBuf,
    /// This organisation's private key (PEM).
    #[arg(long, env = "WIJKRADAR_KEY")]
    pub key: PathBuf,
    /// The name in the server's certificate.
    #[arg(long, env = "WIJKRADAR_SERVER_NAME", default_value = "localhost")]
    pub server_name: String,
}

impl Connection {
    /// The connection of client `name` of a development setup to a server
    /// it runs on `addr` (demo and benchmarks).
    pub fn dev(
        setup: &wijkradar_dev::DevSetup,
        addr: std::net::SocketAddr,
        name: &str,
    ) -> Connection {
        let client = setup.client_at(addr, name);
        Connection {
            server: client.server,
            ca: client.tls.ca,
            cert: client.tls.cert,
            key: client.tls.key,
            server_name: client.tls.domain,
        }
    }

    /// A query client that accepts whole-municipality answers.
    pub async fn query_client(
        &self,
    ) -> anyhow::Result<
        wijkradar_proto::v1::query_service_client::QueryServiceClient<tonic::transport::Channel>,
    > {
        let client = wijkradar_proto::v1::query_service_client::QueryServiceClient::new(
            self.connect().await?,
        );
        Ok(client.max_decoding_message_size(wijkradar_server::MAX_ANSWER_BYTES))
    }

    pub async fn connect(&self) -> anyhow::Result<tonic::transport::Channel> {
        let tls = ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            domain: self.server_name.clone(),
        };
        Ok(wijkradar_agent::connect(&self.server, &tls).await?)
    }
}
